"""The objects a server puts into its cluster so agents can join by token (what kubeadm's
`init` bootstrap-token phase makes), and Traefik's read access.

- a bootstrap-token Secret per token (kube-system/bootstrap-token-ID), usable to
  authenticate and to sign, in the extra group BOOTSTRAP_GROUP;
- BOOTSTRAP_GROUP may create CSRs (system:node-bootstrapper), and its node-client CSRs are
  approved by the controller-manager (…:nodeclient); nodes' renewals too (…:selfnodeclient);
- system:nodes may do what kube-proxy needs (system:node-proxier): an agent's kube-proxy
  runs with its kubelet's certificate;
- kube-public/cluster-info holds the CA and the server; anyone may read it (agents fetch it
  before they trust anything), and the bootstrapsigner adds `jws-kubeconfig-ID` to it;
- Traefik's user may read Services, Endpoints, Secrets and Ingresses and write Ingress status.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import yaml

from kairos.provider.certs import TRAEFIK_USER
from kairos.provider.token import BootstrapToken

BOOTSTRAP_GROUP = "system:bootstrappers:kairos:default-node-token"
CSR_ROLES = "system:certificates.k8s.io:certificatesigningrequests"


def token_secret(token: BootstrapToken) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Secret", "type": "bootstrap.kubernetes.io/token",
        "metadata": {"name": f"bootstrap-token-{token.id}", "namespace": "kube-system"},
        "stringData": {"description": "kairos: nodes join the cluster with this token",
                       "token-id": token.id, "token-secret": token.secret,
                       "usage-bootstrap-authentication": "true",
                       "usage-bootstrap-signing": "true",
                       "auth-extra-groups": BOOTSTRAP_GROUP},
    }


def _binding(name: str, role: str, kind: str, subject: str) -> dict[str, Any]:
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": role},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": kind,
                          "name": subject}]}


def _rule(groups: Sequence[str], resources: Sequence[str],
          verbs: Sequence[str]) -> dict[str, Any]:
    return {"apiGroups": list(groups), "resources": list(resources), "verbs": list(verbs)}


def rbac() -> list[dict[str, Any]]:
    read = ("get", "list", "watch")
    return [
        _binding("kairos:kubelet-bootstrap", "system:node-bootstrapper", "Group",
                 BOOTSTRAP_GROUP),
        _binding("kairos:node-autoapprove-bootstrap", f"{CSR_ROLES}:nodeclient", "Group",
                 BOOTSTRAP_GROUP),
        _binding("kairos:node-autoapprove-certificate-rotation",
                 f"{CSR_ROLES}:selfnodeclient", "Group", "system:nodes"),
        _binding("kairos:node-proxier", "system:node-proxier", "Group", "system:nodes"),
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
         "metadata": {"name": "kairos:bootstrap-signer-clusterinfo",
                      "namespace": "kube-public"},
         "rules": [{"apiGroups": [""], "resources": ["configmaps"],
                    "resourceNames": ["cluster-info"], "verbs": ["get"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
         "metadata": {"name": "kairos:bootstrap-signer-clusterinfo",
                      "namespace": "kube-public"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                     "name": "kairos:bootstrap-signer-clusterinfo"},
         "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User",
                       "name": "system:anonymous"}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
         "metadata": {"name": "kairos:traefik"},
         "rules": [_rule([""], ["services", "endpoints", "secrets", "nodes"], read),
                   _rule(["discovery.k8s.io"], ["endpointslices"], read),
                   _rule(["extensions", "networking.k8s.io"], ["ingresses", "ingressclasses"],
                         read),
                   _rule(["extensions", "networking.k8s.io"], ["ingresses/status"],
                         ["update"])]},
        _binding("kairos:traefik", "kairos:traefik", "User", TRAEFIK_USER),
    ]


def cluster_info(kubeconfig: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "cluster-info", "namespace": "kube-public"},
            "data": {"kubeconfig": kubeconfig}}


def server_objects(tokens: Sequence[BootstrapToken], cluster_info_kubeconfig: str) -> str:
    """Every object as one YAML stream for `kubectl apply -f -` (it holds token secrets:
    pass it on stdin, never in a file or an argument)."""
    docs = [*(token_secret(t) for t in tokens), *rbac(),
            cluster_info(cluster_info_kubeconfig)]
    return yaml.safe_dump_all(docs, sort_keys=False)

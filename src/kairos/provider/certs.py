"""Which certificates a server needs, and who they name: pure, from the plan's values.

The same set kubeadm makes, under the same names in /etc/kubernetes/pki:

- `ca` (kubernetes-ca) signs the apiserver's serving certificate, every client certificate,
  and (through the controller-manager) the kubelets' client certificates of joined agents;
- `etcd/ca` signs etcd's server and peer certificates and the apiserver's etcd client;
- `front-proxy-ca` signs the front proxy client (the aggregation layer);
- `sa` is the key pair service-account tokens are signed with.

A kubelet's serving certificate is its own (self-signed by the kubelet): the apiserver does
not check it, as with kubeadm's defaults.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from kairos.provider.pki import CA_DAYS, CertSpec, KeyPairSpec

API_DNS = ("kubernetes", "kubernetes.default", "kubernetes.default.svc")
ADMIN_USER = "kubernetes-admin"
TRAEFIK_USER = "kairos:traefik"


def service_ip(service_cidr: str) -> str:
    """The first address of the service range: the `kubernetes` Service's ClusterIP."""
    return str(next(ipaddress.ip_network(service_cidr).hosts()))


def split_sans(sans: Sequence[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(DNS names, IPs) of a list that mixes them."""
    dns, ips = [], []
    for san in sans:
        try:
            ips.append(str(ipaddress.ip_address(san)))
        except ValueError:
            dns.append(san)
    return tuple(dns), tuple(ips)


def _unique(items: Sequence[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(i for i in items if i))


def server_certs(*, node_name: str, hostname: str, node_ip: str, service_cidr: str,
                 cluster_domain: str, tls_sans: Sequence[str] = (),
                 advertise_address: str = "") -> tuple[CertSpec | KeyPairSpec, ...]:
    """Every certificate and key pair of a server, CAs first."""
    extra_dns, extra_ips = split_sans(tls_sans)
    api_dns = _unique([*API_DNS, f"kubernetes.default.svc.{cluster_domain}", "localhost",
                       hostname, node_name, *extra_dns])
    api_ips = _unique([service_ip(service_cidr), "127.0.0.1", node_ip, advertise_address,
                       *extra_ips])
    etcd_dns = _unique(["localhost", hostname, node_name])
    etcd_ips = _unique(["127.0.0.1", node_ip])
    return (
        CertSpec("ca", "kubernetes-ca", days=CA_DAYS),
        CertSpec("etcd/ca", "etcd-ca", days=CA_DAYS),
        CertSpec("front-proxy-ca", "front-proxy-ca", days=CA_DAYS),
        KeyPairSpec("sa"),
        CertSpec("apiserver", "kube-apiserver", issuer="ca", server=True,
                 dns=api_dns, ips=api_ips),
        CertSpec("apiserver-kubelet-client", "kube-apiserver-kubelet-client",
                 orgs=("system:masters",), issuer="ca", client=True),
        CertSpec("apiserver-etcd-client", "kube-apiserver-etcd-client", issuer="etcd/ca",
                 client=True),
        CertSpec("etcd/server", node_name, issuer="etcd/ca", server=True, client=True,
                 dns=etcd_dns, ips=etcd_ips),
        CertSpec("etcd/peer", node_name, issuer="etcd/ca", server=True, client=True,
                 dns=etcd_dns, ips=etcd_ips),
        CertSpec("front-proxy-client", "front-proxy-client", issuer="front-proxy-ca",
                 client=True),
        CertSpec("admin", ADMIN_USER, orgs=("system:masters",), issuer="ca", client=True),
        CertSpec("controller-manager", "system:kube-controller-manager", issuer="ca",
                 client=True),
        CertSpec("scheduler", "system:kube-scheduler", issuer="ca", client=True),
        CertSpec("kube-proxy", "system:kube-proxy", issuer="ca", client=True),
        CertSpec("kubelet", f"system:node:{node_name}", orgs=("system:nodes",), issuer="ca",
                 client=True),
        CertSpec("traefik", TRAEFIK_USER, issuer="ca", client=True),
    )

"""The Kubernetes provider: cloud-config's k3s/k3s-agent/k0s blocks → a running node.

Pure parts: config.py (the blocks), args.py (k3s/k0s flags → components' flags), token.py
(bootstrap tokens, the JWS of cluster-info), plan.py (the node plan), certs.py (which
certificates), render.py (units, containerd, CNI, kubeconfigs), objects.py (the join objects
a server publishes). Parts that act: facts.py (what the machine is), manifest.py (what the
image carries), pki.py (openssl), join.py (an agent finds its server), units.py (systemd),
images.py (containerd imports), kube.py (kubectl), apply.py (the whole apply), status.py
(`kairos state`). docs/kubernetes.md tells the design.
"""

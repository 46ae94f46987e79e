# A one-node Kubernetes cluster on this machine (issue 12; docs/cluster.md): etcd, the control
# plane, Debian's containerd and runc, a kubelet, kube-proxy (iptables) and CoreDNS, pulling the
# images of mk/images.mk from the registry on $(REGISTRY) by digest. State in .cache/cluster.

# The binaries come from test/k8s/build.sh (make kube-deps), CoreDNS included.
CLUSTER := REGISTRY=$(REGISTRY) GO=$(GO) ./test/cluster/cluster.sh

.PHONY: cluster-up
cluster-up: kube-deps ## One-node cluster: control plane, containerd, kubelet, kube-proxy, CoreDNS, registry with the images (idempotent)
	@$(CLUSTER) up

.PHONY: cluster-down
cluster-down: ## Stop the cluster; remove its processes, bridge, mounts, netns, iptables chains and sysctl changes
	@$(CLUSTER) down

.PHONY: cluster-status
cluster-status: ## What of the cluster runs; CLUSTER_ENV=1 prints KUBECONFIG= and friends
	@$(CLUSTER) status $(if $(CLUSTER_ENV),--env)

.PHONY: cluster-verify-down
cluster-verify-down: ## Fail, naming it, if anything cluster-up made is still there
	@$(CLUSTER) verify-down

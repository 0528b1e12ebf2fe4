"""Where explained drops go: the drop store, Prometheus metrics, Kubernetes Events."""

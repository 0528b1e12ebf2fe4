"""Cluster state: the Kubernetes objects explanations need, loaded and indexed."""

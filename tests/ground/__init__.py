"""The test ground: real parts (Kubernetes control plane, Prometheus, S3 server, vLLM) on loopback."""

"""Plain Kubernetes manifests rendered from the Helm chart, for clusters managed without Helm."""

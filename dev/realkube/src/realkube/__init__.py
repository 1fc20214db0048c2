"""A real Kubernetes control plane for the tests, built from the Go module proxy
(see realkube.testing and scripts/build-realkube.sh)."""

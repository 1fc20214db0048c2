"""kubesim: a small, faithful local Kubernetes API server for `make run` and the tests.

Run it with `pipeops-kubesim` (see `kubesim.__main__`) or from tests with
`kubesim.testing.Kubesim`.
"""

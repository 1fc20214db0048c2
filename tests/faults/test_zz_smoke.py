import time
from tests.faults.pod import FaultPod
from tests.helpers import wait_for

def test_smoke(pod: FaultPod) -> None:
    print("routes", pod.held_routes(), pod.cluster_routes())
    pod.add_ingress("a", "a.faults.test")
    t = time.monotonic()
    wait_for(pod.routes_match, 10, what="x")
    print("match after", time.monotonic() - t, pod.held_routes())
    print(pod.describe("tunnel")["runtime"])
    print(pod.tunnel_connected(), pod.heartbeats())

import time
from tests.conftest import ok, Api

def test_explore(org, operator, anonymous, make_org, make_content):
    t=time.perf_counter()
    b = make_org("B")
    c1 = make_content(2, "C1")
    c2 = make_content(1, "C2")
    for o in (org, b):
        o.buy(10)
        e1, e2, e3 = o.employee("E1"), o.employee("E2"), o.employee("E3")
        a1 = o.assign(c1, [e1, e2, e3])["data"]
        ok(o.act(a1[1]["id"], "start"))
        ok(o.api.post(o.path(f"/employees/{e3}/deactivate")))
        a2 = o.assign(c2, [e1])["data"]
        ok(o.act(a2[0]["id"], "complete"))
    print("world", time.perf_counter()-t)
    from tests.conftest import table_snapshot
    t=time.perf_counter()
    for i in range(10): table_snapshot()
    print("snap", (time.perf_counter()-t)/10)
    t=time.perf_counter()
    for i in range(20): org.api.get(org.path("/balance"))
    print("req", (time.perf_counter()-t)/20)

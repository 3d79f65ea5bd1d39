"""Host-side measurement and reporting around the device runtime (numpy; torch only when asked).

    bench      `s4t-edge bench`: per-stage latency, episodes and memory of the θ backends against
               the published protocol, all contenders interleaved in one run
    memory     process RSS, CUDA allocator and Jetson tegrastats/jtop readers for the bench
    evaluate   `adapt_dataset`: adapt a whole dataset batch by batch and score source vs adapted θ
               with the labels (`s4t-edge adapt`, `demo`)
    report     the markdown + PNG report of such a run (`s4t-edge adapt --report DIR`)

These drive `s4t_edge.runtime` from outside; the runtime never imports them.  Nothing here
imports torch at import time: only a torch contender (`bench --backend torch`, `--reference`) or
a run directory to rebuild does, inside the function that needs it.
"""

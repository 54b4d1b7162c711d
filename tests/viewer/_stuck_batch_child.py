"""A stand-in for ``python -m viewer.batch_process`` that never stops by itself (not a test module).

It writes what a batch killed in the middle of an append leaves behind (the header, one complete
study, a torn row), reports that study done, then ignores everything, ``("cancel",)`` included:
only a kill ends it. ``test_batch_dialog`` points the dialog's child at this module.
"""

from __future__ import annotations

import sys
import threading
from multiprocessing.connection import Connection

HEADER = "study_id,side,status,error,p_malignant,model,model_version,device,seconds\n"
COMPLETE = "A,R,ok,,0.25,stub,1,cpu,0.1\nA,L,ok,,0.5,stub,1,cpu,0.1\n"
TORN = "B,R,ok,,0.7"


def main(fd: int) -> None:
    conn = Connection(fd)
    _kind, request = conn.recv()
    with open(request["output_csv"], "w", encoding="utf-8") as fh:
        fh.write(HEADER + COMPLETE + TORN)
    conn.send(("engine", {"model": "stub", "model_version": "1", "device": "cpu"}))
    conn.send(("progress", {"done": 1, "total": 2, "skipped": 0, "errors": 0, "study_id": "A", "status": "ok",
                            "message": None, "elapsed": 0.1, "rate": 10.0, "eta": 0.1}))  # fmt: skip
    threading.Event().wait()


if __name__ == "__main__":
    main(int(sys.argv[1]))

"""The inference process: ``python -m stamp_ros.inference.process CONN_FD LIFELINE_FD``.

Started by :class:`stamp_ros.inference.proxy.InferenceProcess`, never by hand. It owns the
model and everything that lives with it (the :class:`StampSegmenter`, the SAM refiner, the frame
prefix cache, CUDA state) and runs one request at a time on its main thread:

1. receive a :class:`LoadSpec`, set the scheduling priority and the thread budget, load,
   report :class:`Loaded` (or :class:`LoadFailed` and exit), warm up, report
   :class:`WarmedUp`; meanwhile :class:`LifeSigns` tells the node that it is still working;
2. for each :class:`SegmentRequest`: map the slot it names (a slot's segment handed over as a
   descriptor arrives just before, with :class:`SlotFd`), run the engine on the frame in it
   (progress sent back when asked for, the slot's cancel flag polled every few decode steps),
   write the masks into the slot and reply :class:`Done`, or :class:`Failed` with the reason;
3. exit on :class:`Stop`, when the node closes the pipe, or when the node dies: a thread
   blocks on the lifeline pipe, whose other end only the node holds, and ends the process when
   it reads end-of-file, so a model is never left behind holding a GPU.
"""

from __future__ import annotations

import itertools
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from stamp_ros.inference.errors import describe_failure
from stamp_ros.inference.protocol import (
    Alive,
    Done,
    Failed,
    InstanceMeta,
    Loaded,
    LoadFailed,
    LoadSpec,
    Progress,
    SegmentRequest,
    SlotFd,
    Stop,
    WarmedUp,
    WarmupRequest,
)
from stamp_ros.inference.slots import SlotMaps, cancelled, frame_view, recv_fd, write_masks

log = logging.getLogger("stamp_ros.inference")


def _watch_lifeline(fd: int) -> None:
    """End the process when the node is gone (the read returns end-of-file)."""
    try:
        while os.read(fd, 1):
            pass
    except OSError:
        pass
    os._exit(0)


def apply_thread_budget(threads: int) -> None:
    if threads > 0:
        import torch

        torch.set_num_threads(threads)


def _free_cuda_cache() -> None:
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


HEARTBEAT_S = 1.0
"""Longest gap between two signs of life while a request that asked for no progress runs."""


def heartbeat(send: Callable[[Any], None], rid: int) -> Callable[[str, str], None]:
    """The progress callback of a request whose caller wants no progress: a text-less
    :class:`Progress` at every stage and at most every :data:`HEARTBEAT_S` while decoding, so
    the node can tell a busy process from a hung one (``inference_stall_timeout``)."""
    last = [float("-inf"), ""]

    def beat(stage: str, _text: str) -> None:
        t = time.monotonic()
        if stage != last[1] or t - last[0] >= HEARTBEAT_S:
            last[0], last[1] = t, stage
            send(Progress(rid, stage, ""))

    return beat


def _this_thread_cpu() -> Callable[[], int]:
    """Nanoseconds of CPU the calling thread has used, as a function other threads can call
    (a constant where the system cannot tell: then every look counts as a sign of life)."""
    try:
        clock = time.pthread_getcpuclockid(threading.get_ident())
        time.clock_gettime_ns(clock)
    except (AttributeError, OSError):
        counter = itertools.count()
        return lambda: next(counter)
    return lambda: time.clock_gettime_ns(clock)


def _storage_bytes() -> int:
    """Bytes this process has read from and written to storage (0 where unknown)."""
    try:
        with open("/proc/self/io", encoding="ascii") as io:
            fields = dict(line.split(": ") for line in io.read().splitlines())
        return int(fields["read_bytes"]) + int(fields["write_bytes"])
    except (OSError, KeyError, ValueError):
        return 0


class LifeSigns:
    """While the model loads or warms up the engine reports nothing; this thread sends
    :class:`Alive` at most every :data:`HEARTBEAT_S` while the process is still working: the
    thread that loads (the one that made this object) used CPU, or the process read or wrote
    storage (a download, a cold disk) since the last look. A process stuck in a deadlock, a
    blocking driver call or a hung mount shows neither and goes silent, and so does one frozen
    whole or holding the interpreter lock (this thread cannot run): the node then kills it after
    ``inference_stall_timeout``, as one that hangs while decoding. A single native call that
    spins the CPU for ever (e.g. a busy-waiting GPU driver) still looks alive."""

    def __init__(self, send: Callable[[Any], None], stage: str) -> None:
        self._send = send
        self._stage = stage
        self._cpu = _this_thread_cpu()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"life-signs-{stage}")

    def __enter__(self) -> LifeSigns:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _look(self) -> tuple[int, int]:
        return self._cpu(), _storage_bytes()

    def _run(self) -> None:
        try:
            self._send(Alive(self._stage))  # started: the silence that counts starts here
            last = self._look()
            while not self._stop.wait(HEARTBEAT_S):
                now = self._look()
                if now != last:
                    self._send(Alive(self._stage))
                last = now
        except OSError:  # the node is gone: the lifeline ends the process
            pass


def locked(send: Callable[[Any], None]) -> Callable[[Any], None]:
    """``send`` for several threads (a Connection writes a message in more than one piece)."""
    lock = threading.Lock()

    def send_locked(msg: Any) -> None:
        with lock:
            send(msg)

    return send_locked


class Server:
    """The request loop around one loaded segmenter."""

    def __init__(self, conn: Connection, segmenter, send: Callable[[Any], None] | None = None
                 ) -> None:
        self.conn = conn
        self.send = send or conn.send
        self.segmenter = segmenter
        self.slots = SlotMaps()

    def serve(self) -> None:
        while True:
            try:
                msg = self.conn.recv()
                fd = recv_fd(self.conn) if isinstance(msg, SlotFd) else -1  # it follows
            except (EOFError, OSError):  # the node closed the pipe
                break
            if isinstance(msg, SlotFd):
                try:
                    self.slots.adopt(msg.slot, fd)
                except (OSError, ValueError) as exc:  # the request on it fails with the reason
                    log.error("cannot map slot segment %s: %s", msg.slot.name, exc)
                continue
            if isinstance(msg, Stop):
                break
            if isinstance(msg, SegmentRequest):
                self.send(self.segment(msg))
            elif isinstance(msg, WarmupRequest):
                self.send(self.warmup(msg.rid, msg.size_hw))
        self.slots.close()

    def warmup(self, rid: int, size_hw: tuple[int, int] = (64, 64)) -> WarmedUp:
        try:
            with LifeSigns(self.send, "warmup"):
                return WarmedUp(rid, self.segmenter.warmup(size_hw))
        except Exception as exc:
            log.warning("warm-up failed: %s", describe_failure(exc))
            return WarmedUp(rid, {}, describe_failure(exc))

    def segment(self, req: SegmentRequest) -> Done | Failed:
        from stamp_ros.engine.errors import EngineError, InferenceCancelled, InputError

        seg = self.segmenter
        seg.max_new_tokens = req.settings.max_new_tokens
        seg.mask_upsample = req.settings.mask_upsample
        seg.system_prompt = req.settings.system_prompt
        try:
            mapping = self.slots.get(req.slot)
        except (OSError, RuntimeError) as exc:  # never a frame the process cannot see
            return Failed(req.rid, "unexpected", f"the frame's slot cannot be mapped: {exc}")
        buf = mapping.buf
        image = req.inline_image if req.inline_image is not None else frame_view(buf, req.shape)
        send = self.send
        report = (lambda stage, text: send(Progress(req.rid, stage, text))) if req.progress \
            else heartbeat(send, req.rid)
        t0 = time.perf_counter()
        try:
            result = seg.segment(
                image, req.query, req.history,
                progress=report,
                should_cancel=lambda: cancelled(buf),
                forced_answer_ids=req.forced_answer_ids,
                image_in_first_turn=req.image_in_first_turn,
                frame_key=req.frame_key, path=req.path)
        except InferenceCancelled as exc:
            return Failed(req.rid, "cancelled", str(exc))
        except InputError as exc:
            return Failed(req.rid, "input", str(exc))
        except EngineError as exc:
            return Failed(req.rid, "engine", str(exc))
        except ValueError as exc:
            return Failed(req.rid, "value", str(exc))
        except Exception as exc:  # CUDA OOM and anything unexpected: report, keep serving
            log.error("inference failed: %s", describe_failure(exc), exc_info=True)
            _free_cuda_cache()
            return Failed(req.rid, "unexpected", describe_failure(exc))
        finally:
            del image  # no view into the slot may outlive the request
        engine_ms = (time.perf_counter() - t0) * 1000.0
        layout = write_masks([inst.mask for inst in result.instances], buf)
        return Done(
            rid=req.rid, text=result.text,
            instances=[InstanceMeta(i.grid, i.logits, i.bbox, i.area, i.score)
                       for i in result.instances],
            masks=layout, image_size=result.image_size, grid_size=result.grid_size,
            timings_ms=result.timings_ms, token_ids=list(result.token_ids),
            history_text=seg.history_answer(result), engine_ms=engine_ms)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    conn_fd, lifeline_fd = int(argv[0]), int(argv[1])
    # Ctrl-C in a terminal reaches the whole process group: the node decides when this process
    # ends (Stop, or its lifeline), after answering what it still owes.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr,
        format="[%(levelname)s] [stamp_ros.inference %(process)d]: %(message)s")
    conn = Connection(conn_fd)
    try:
        spec: LoadSpec = conn.recv()
    except (EOFError, OSError):  # the node went away before it said what to load
        return 0
    # First, while this is the only thread: every thread started later (torch's included)
    # inherits the niceness.
    if spec.nice > 0:
        os.nice(spec.nice)
    threading.Thread(target=_watch_lifeline, args=(lifeline_fd,), daemon=True,
                     name="lifeline").start()
    send = locked(conn.send)
    t0 = time.monotonic()
    try:
        with LifeSigns(send, "load"):
            apply_thread_budget(spec.threads)
            from stamp_ros.engine.segmenter import StampSegmenter

            segmenter = StampSegmenter.from_pretrained(spec.model, **spec.segmenter_options())
    except Exception as exc:  # the node reports it (one line naming the model)
        send(LoadFailed(str(exc) or type(exc).__name__))
        return 1
    import torch

    send(Loaded(os.getpid(), str(segmenter.device), torch.get_num_threads(),
                time.monotonic() - t0))
    server = Server(conn, segmenter, send)
    if spec.warmup:
        send(server.warmup(0))
    server.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())

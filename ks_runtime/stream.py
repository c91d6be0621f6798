"""The streaming runtime: the encoder once per frame into a ring buffer, the head once per clip.

A frame goes: source -> face stage -> `StreamScheduler.push` (queued for the encoder) -> an encoder batch, packed
across frames and streams (bounded size and wait) -> its per-frame outputs in its stream's ring -> once the
key-slot policy's clips around it are all encoded (`clips_for_frame`), its clip(s) are cut from the ring by
`kernels.gather_clips` into head batches -> its probabilities are final. A stream ends at its source's end or
at a frame with no face; its last frames are then scored with the edge frame replicated, exactly as dense
testing does (`dense_clip_indices`), so the streamed outputs equal `clip.onnx` run densely.
`run_sources` drives one or several sources through bounded queues (back-pressure: files wait, live drops).
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from ks_runtime.core import kernels
from ks_runtime.core.errors import ConfigError, DataError
from ks_runtime.core.policy import check_policy, clips_for_frame, key_slots
from ks_runtime.core.preprocess import Preprocess
from ks_runtime.core.results import NO_FACE, Face, FrameResult
from ks_runtime.engine.base import Engine
from ks_runtime.faces.base import FaceStage
from ks_runtime.io.queues import FrameQueue, QueueClosed, SourceReader
from ks_runtime.io.sources import Source, SourceFrame

log = logging.getLogger(__name__)

# A batch is staged in memory (B x S x S x 3 bytes, and its float copy): past this it only costs memory and latency.
MAX_BATCH_SIZE = 1024
MAX_WAIT_MS = 60_000.0  # a minute: longer is a mistake, not a tuning
LIMITS: dict[str, tuple[float, float]] = {
    "batch_size": (1, MAX_BATCH_SIZE),
    "head_batch": (1, 4096),
    "queue_size": (1, 4096),
    "max_wait_ms": (0.0, MAX_WAIT_MS),
}


@dataclass(frozen=True)
class StreamConfig:
    """Knobs of the streaming runtime.

    batch_size: most frames per encoder batch (across streams); max_wait_ms: longest a frame waits for its
    batch to fill; head_batch: most clips per head call; queue_size: frames buffered per source.
    """

    policy: str = "last"
    batch_size: int = 8
    max_wait_ms: float = 10.0
    head_batch: int = 64
    queue_size: int = 16

    def __post_init__(self) -> None:
        try:
            check_policy(self.policy)
        except ValueError as error:
            raise ConfigError(str(error)) from None
        for name, (low, high) in LIMITS.items():
            value = getattr(self, name)
            # `not low <= value <= high` also refuses NaN
            if not low <= value <= high:
                raise ConfigError(f"{name}={value} is out of range; allowed: {_interval(low, high)}")


def _interval(low: float, high: float) -> str:
    return f"{low}..{high}" if isinstance(low, int) and isinstance(high, int) else f"[{low:g}, {high:g}]"


@dataclass
class _FaceStream:
    """One stream of consecutive frames of one face (`face_id`) of a source: its rings of per-frame outputs and its
    progress. Frames are numbered t = 0, 1, ... from the stream's start; frame t sits in ring row t % rows.
    """

    source: str
    number: int
    face_id: int
    sa: np.ndarray  # (R, U) S_a logits
    students: np.ndarray  # (R, n, U) every student's logits
    length: int = 0  # frames pushed
    encoded: int = 0  # frames whose outputs are in the ring
    finalised: int = 0  # frames whose result is final
    ended: bool = False
    waiting: deque = field(default_factory=deque)  # FrameResults of frames finalised..length-1
    device_ring: object | None = None  # the engine's device ring (engine `trt`), used instead of sa/students


@dataclass
class _Pending:
    stream: _FaceStream
    t: int
    crop: np.ndarray
    arrival: float


class StreamScheduler:
    """Streams of frames -> per-frame AU probabilities, each final as soon as the policy allows.

    push() queues a frame's face (push_faces() all its faces); step() runs at most one encoder batch when one is
    due and returns the results that became final, in frame order per source (a frame's faces by face_id); end()
    ends a source's streams; flush() finishes everything. Each face of a source is a stream of its own: its own
    ring and clips, so one face's frames never enter another's clip.
    """

    def __init__(
        self,
        engine: Engine,
        preprocess: Preprocess,
        config: StreamConfig = StreamConfig(),
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.engine, self.preprocess, self.config, self.clock = engine, preprocess, config, clock
        self.n, self.n_aus, self.stride = engine.clip_len, engine.n_aus, engine.clip_stride
        self.k = len(key_slots(0, self.n, config.policy))  # clips per frame: n under ensemble, else 1
        # Unfinalised frames span at most a clip's reach, (n-1) * stride frames, before a batch; the oldest needs
        # as many before it.
        self.ring_rows = config.batch_size + 2 * ((self.n - 1) * self.stride + 1)
        # An engine with device rings (TensorRT) keeps the per-frame outputs on the GPU: crops go up once,
        # the kernels pack them and cut clips there, and only the probabilities come back.
        self.device_rings = callable(getattr(engine, "open_ring", None))
        self._pending: deque[_Pending] = deque()
        self._open: dict[str, dict[int, _FaceStream]] = {}  # source -> face_id -> its open stream
        self._dirty: dict[int, _FaceStream] = {}  # streams with frames that may have become final
        self._outbox: dict[str, deque[FrameResult]] = {}
        self._streams_started: dict[str, int] = {}
        self._waiting_by_source: dict[str, int] = {}  # frames waiting for the encoder, per source
        s = preprocess.size
        self._frames = np.empty((config.batch_size, s, s, 3), np.uint8)  # (B, S, S, 3) staging for pack_frames
        self._inputs = np.empty((config.batch_size, 3, s, s), np.float32)  # (B, 3, S, S) encoder input
        self.encoder_batches = 0
        self.head_batches = 0

    # --- input ------------------------------------------------------------------------------------------
    def push(self, source: str, frame: SourceFrame, face: Face, arrival: float | None = None) -> FrameResult:
        """Queue one face of a frame of `source` (its stream is the face's `face_id`); a frame without a face ends
        every stream of the source."""
        arrival = self.clock() if arrival is None else arrival
        size = self.preprocess.size
        if face.success and (face.crop.shape != (size, size, 3) or face.crop.dtype != np.uint8):
            # Refused before it is queued, so the stream stays usable.
            raise DataError(
                f"{source}: frame {frame.index}: the face stage gave a {face.crop.dtype} crop of "
                f"shape {face.crop.shape}, the network needs uint8 ({size}, {size}, 3)"
            )
        record = FrameResult(
            source,
            frame.index,
            frame.timestamp,
            face.success,
            face.confidence,
            None,
            arrival,
            box=face.box,
            face_id=face.face_id if face.success else 0,
        )
        self._outbox.setdefault(source, deque()).append(record)
        if not face.success:
            self.end(source)
            record.final = self.clock()
            return record
        if face.starts_track:  # a new face under an id that had one (a tracker that moved on): a new stream
            self.end(source, face.face_id)
        stream = self._open.setdefault(source, {}).get(face.face_id)
        if stream is None:
            stream = self._open[source][face.face_id] = self._new_stream(source, face.face_id)
        record.stream = stream.number
        stream.waiting.append(record)
        self._pending.append(_Pending(stream, stream.length, face.crop, arrival))
        self._waiting_by_source[source] = self._waiting_by_source.get(source, 0) + 1
        stream.length += 1
        return record

    def push_faces(
        self, source: str, frame: SourceFrame, faces: Sequence[Face], arrival: float | None = None
    ) -> list[FrameResult]:
        """Queue every face of a frame of `source`, one result each; a face no longer there ends its stream, and a
        frame without faces gets one no-face result and ends them all."""
        if not faces:
            return [self.push(source, frame, NO_FACE, arrival)]
        present = {face.face_id for face in faces}
        if len(present) != len(faces):
            raise DataError(f"{source}: frame {frame.index}: the face stage gave two faces the same face_id")
        for face_id in set(self._open.get(source, {})) - present:
            self.end(source, face_id)
        return [self.push(source, frame, face, arrival) for face in faces]

    def _new_stream(self, source: str, face_id: int) -> _FaceStream:
        """A new stream for a face of `source`, numbered after the source's earlier streams."""
        number = self._streams_started.get(source, 0)
        self._streams_started[source] = number + 1
        if self.device_rings:
            return _FaceStream(
                source,
                number,
                face_id,
                np.zeros((0, self.n_aus), np.float32),
                np.zeros((0, self.n, self.n_aus), np.float32),
                device_ring=self.engine.open_ring(self.ring_rows),
            )
        return _FaceStream(
            source,
            number,
            face_id,
            np.zeros((self.ring_rows, self.n_aus), np.float32),
            np.zeros((self.ring_rows, self.n, self.n_aus), np.float32),
        )

    def end(self, source: str, face_id: int | None = None) -> None:
        """End `source`'s streams (its source ended, or a frame had no face), or only face `face_id`'s (the face
        is gone): their last frames are scored with the edge frame replicated."""
        open_faces = self._open.get(source, {})
        for key in list(open_faces) if face_id is None else [face_id]:
            stream = open_faces.pop(key, None)
            if stream is not None:
                stream.ended = True
                self._dirty[id(stream)] = stream
        if not open_faces:
            self._open.pop(source, None)

    def forget(self, source: str) -> None:
        """Drop what is kept of an ended `source` whose results are all collected (its stream numbering), for a
        server whose sources (clients) come and go; a source with open streams or results to collect is refused."""
        if source in self._open or source in self._outbox or self._waiting_by_source.get(source):
            raise RuntimeError(f"{source}: still has open streams or results to collect; end it and collect them")
        self._streams_started.pop(source, None)
        self._waiting_by_source.pop(source, None)

    # --- scheduling -------------------------------------------------------------------------------------
    @property
    def pending(self) -> int:
        """Frames waiting for the encoder."""
        return len(self._pending)

    def deadline(self) -> float | None:
        """Clock time at which the oldest waiting frame's bounded wait runs out (None: nothing waits)."""
        if not self._pending:
            return None
        return self._pending[0].arrival + self.config.max_wait_ms / 1e3

    def due(self, now: float | None = None, feeding: Collection[str] | None = None) -> bool:
        """An encoder batch is due: a full batch waits, the oldest frame has waited long enough, a frame of
        an ended stream waits, or every source still `feeding` frames has one waiting (waiting longer would
        only hold them: a source's next frame comes after its own frame period)."""
        if not self._pending:
            return False
        if len(self._pending) >= self.config.batch_size or any(s.ended for s in self._dirty.values()):
            return True
        if feeding is not None and all(self._waiting_by_source.get(key, 0) for key in feeding):
            return True
        return (self.clock() if now is None else now) >= self.deadline()

    def step(self, force: bool = False, feeding: Collection[str] | None = None) -> list[FrameResult]:
        """Run one encoder batch if one is due (any waiting frames when `force`), then the heads of every
        frame that became final; returns the results now ready, in frame order per source."""
        if self._pending and (force or self.due(feeding=feeding)):
            self._encode_batch()
        self._finalise()
        return self._collect()

    def flush(self) -> list[FrameResult]:
        """Encode every waiting frame and return every result that can be final."""
        out = []
        while self._pending:
            self._encode_batch()
            self._finalise()
            out += self._collect()
        self._finalise()
        return out + self._collect()

    def close(self) -> list[FrameResult]:
        """End every stream and return all remaining results."""
        for source in list(self._open):
            self.end(source)
        results = self.flush()
        unfinished = [r for box in self._outbox.values() for r in box]
        if unfinished:
            raise RuntimeError(f"{len(unfinished)} frames left unfinished at close (first: {unfinished[0]})")
        self._outbox.clear()
        return results

    # --- the work -----------------------------------------------------------------------------------------
    def _encode_batch(self) -> None:
        """The oldest waiting frames (up to batch_size, any streams) through the encoder, into their rings."""
        batch = [self._pending.popleft() for _ in range(min(self.config.batch_size, len(self._pending)))]
        b = len(batch)
        for i, item in enumerate(batch):
            self._frames[i] = item.crop
            self._waiting_by_source[item.stream.source] -= 1
        if self.device_rings:
            self.engine.encode_crops(self._frames[:b], [(i.stream.device_ring, i.t % self.ring_rows) for i in batch])
        else:
            inputs = kernels.pack_frames(
                self._frames[:b],
                self.preprocess.mean,
                self.preprocess.std,
                swap_rb=self.preprocess.colour == "BGR",
                out=self._inputs[:b],
            )  # (b, 3, S, S)
            sa, students = self.engine.encode(inputs)  # (b, U), (b, n, U)
        self.encoder_batches += 1
        for i, item in enumerate(batch):
            stream, row = item.stream, item.t % self.ring_rows
            if item.t != stream.encoded:
                raise RuntimeError(f"{stream.source}: frame {item.t} of stream {stream.number} encoded out of order")
            if not self.device_rings:
                stream.sa[row] = sa[i]
                stream.students[row] = students[i]
            stream.encoded += 1
            self._dirty[id(stream)] = stream

    def _ready_clips(self, stream: _FaceStream) -> tuple[list[int], list[int], list[int]]:
        """Frames of `stream` whose clips are all encoded: (frames t, clip ends, key slots), k per frame.

        The clips come from the shared policy function; with the end unknown, its last index is the clip's
        unclamped end, which gather_clips clamps to the stream's last frame once the stream has ended.
        """
        frames, ends, slots = [], [], []
        t = stream.finalised
        while t < stream.length:
            refs = clips_for_frame(t, None, self.n, self.config.policy, self.stride)
            clip_ends = [ref.frames[-1] for ref in refs]
            need = min(max(clip_ends), stream.length - 1) if stream.ended else max(clip_ends)
            if need >= stream.encoded:
                break
            frames.append(t)
            ends += clip_ends
            slots += [ref.key_slot for ref in refs]
            t += 1
        return frames, ends, slots

    def _finalise(self) -> None:
        """Score every frame whose clips are complete: gather its clips from the ring, run the head in batches."""
        work = []
        for key, stream in list(self._dirty.items()):
            frames, ends, slots = self._ready_clips(stream)
            if frames:
                work.append((stream, frames, np.asarray(ends, np.int64), slots))
            else:
                self._release_ring(stream)
            if not stream.ended or stream.finalised + len(frames) == stream.length:
                del self._dirty[key]
        if not work:
            return
        u = self.n_aus
        key_slot = np.asarray([s for _, _, _, slots in work for s in slots], np.int64)
        probs = self._device_heads(work, key_slot) if self.device_rings else self._host_heads(work, key_slot)
        # The mean over a frame's k clips, as dense testing averages them (ensemble; k = 1 otherwise).
        probs = probs.reshape(-1, self.k, u).mean(1)  # (frames, U)
        final = self.clock()
        row = 0
        for stream, frames, _, _ in work:
            for _ in frames:
                record = stream.waiting.popleft()
                record.probs, record.final = probs[row], final
                row += 1
            stream.finalised += len(frames)
            self._release_ring(stream)

    def _release_ring(self, stream: _FaceStream) -> None:
        """Free a finished stream's device ring (host rings go with the stream)."""
        if stream.device_ring is not None and stream.ended and stream.finalised == stream.length:
            self.engine.close_ring(stream.device_ring)
            stream.device_ring = None

    def _ring_window(self, stream: _FaceStream) -> tuple[int, int]:
        """The frames still in `stream`'s ring: (first, count)."""
        first = max(0, stream.encoded - self.ring_rows)
        return first, stream.encoded - first

    def _host_heads(self, work: list, key_slot: np.ndarray) -> np.ndarray:
        """Clips cut from the host rings (cpp_ext or numpy), the head in batches of head_batch -> probs [C, U]."""
        n, u = self.n, self.n_aus
        total = len(key_slot)
        sa = np.empty((total, n, u), np.float32)  # (C, n, U) clips' S_a logits
        students = np.empty((total, n, n, u), np.float32)  # (C, n, n, U) clips' student logits
        offset = 0
        for stream, _, ends, _ in work:
            first, count = self._ring_window(stream)
            rows = slice(offset, offset + len(ends))
            kernels.gather_clips(stream.sa, first, count, ends, n, stream_start=0, out=sa[rows], stride=self.stride)
            kernels.gather_clips(
                stream.students, first, count, ends, n, stream_start=0, out=students[rows], stride=self.stride
            )
            offset += len(ends)
        hb = self.config.head_batch
        self.head_batches += -(-total // hb)
        return np.concatenate(
            [self.engine.head(sa[i : i + hb], students[i : i + hb], key_slot[i : i + hb]) for i in range(0, total, hb)]
        )

    def _device_heads(self, work: list, key_slot: np.ndarray) -> np.ndarray:
        """Clips cut by the CUDA kernel from the device rings straight into the head's inputs -> probs [C, U]
        (the engine batches them at its head profile's max batch)."""
        requests = [(stream.device_ring, *self._ring_window(stream), ends) for stream, _, ends, _ in work]
        self.head_batches += 1
        return self.engine.head_clips(requests, key_slot)

    def _collect(self) -> list[FrameResult]:
        """The results now final, in order per source; a frame's faces go out together, never split between two
        calls (the outputs take a frame's image once, for all its faces)."""
        out = []
        for source, box in list(self._outbox.items()):
            while box and box[0].done:
                index = box[0].index
                frame = list(itertools.takewhile(lambda r, index=index: r.index == index, box))
                if not all(r.done for r in frame):
                    break
                out += [box.popleft() for _ in frame]
            if not box and source not in self._open:
                del self._outbox[source]
        return out


class Runner:
    """Drives sources through a StreamScheduler: one reader thread and one bounded FrameQueue per source, the
    face stage, encoder batches across sources with a bounded wait, and results as they become final.

    A frame's clock starts (FrameResult.arrival) when its source delivered it for a source that delivers at its
    own pace (a camera, a replayed file: `Source.realtime`), and when the runner takes it off the queue for a file
    read flat out. An `independent` source's frames (unrelated pictures) each end their stream."""

    def __init__(self, streamer: StreamScheduler, clock: Callable[[], float] = time.perf_counter) -> None:
        self.streamer, self.clock = streamer, clock
        self.queues: dict[str, FrameQueue] = {}

    @property
    def dropped(self) -> dict[str, int]:
        """Frames each live source dropped because the engine fell behind."""
        return {key: q.dropped for key, q in self.queues.items()}

    def run(self, sources: Mapping[str, tuple[Source, FaceStage]]) -> Iterator[list[FrameResult]]:
        """Yield lists of final results until every source has ended; a source's error is raised at the end,
        after every frame read before it has been yielded."""
        streamer, config = self.streamer, self.streamer.config
        wake = threading.Event()
        self.queues = {key: FrameQueue(config.queue_size, source.live, wake) for key, (source, _) in sources.items()}
        readers = [SourceReader(source, self.queues[key], self.clock).start() for key, (source, _) in sources.items()]
        live = set(sources)
        errors: list[BaseException] = []
        try:
            while live or streamer.pending:
                got = self._take(sources, live, errors)
                results = streamer.step(force=not live, feeding=live)
                if results:
                    yield results
                if not got and live and not streamer.due(feeding=live):
                    deadline = streamer.deadline()
                    wake.wait(0.05 if deadline is None else max(0.0, deadline - self.clock()))
                    wake.clear()
            results = streamer.flush()
            if results:
                yield results
        finally:
            for reader in readers:
                reader.stop()
        if errors:
            raise errors[0]

    def _take(
        self, sources: Mapping[str, tuple[Source, FaceStage]], live: set[str], errors: list[BaseException]
    ) -> bool:
        """Move arrived frames (up to a batch) from the queues through the face stage into the engine."""
        got, limit = 0, self.streamer.config.batch_size
        waiting = sorted(live)
        while waiting and got < limit:  # one frame from each source in turn, so no source starves another
            for key in list(waiting):
                if got >= limit:
                    break
                queue = self.queues[key]
                try:
                    item = queue.get(timeout=0)
                except TimeoutError:
                    waiting.remove(key)
                    continue
                except QueueClosed:
                    waiting.remove(key)
                    live.discard(key)
                    self.streamer.end(key)
                    if queue.error is not None:
                        errors.append(queue.error)
                    continue
                source, stage = sources[key]
                taken = self.clock()  # processing starts here, before the face stage
                faces = stage.faces(item.frame.image, item.frame.index)
                # A file read flat out waits in its queue only because it was read ahead of the engine: its frames
                # count from being taken (the latency of processing); a camera's from their arrival.
                self.streamer.push_faces(key, item.frame, faces, item.arrival if source.realtime else taken)
                if source.independent:  # a picture of its own: a one-frame stream, its clip the image repeated
                    self.streamer.end(key)
                got += 1
        return got > 0

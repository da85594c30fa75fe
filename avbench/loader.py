"""Turn clip references into the decoded inputs a detector's InputSpec asks for, through the cache.

`MediaLoader.load` decodes a clip once per setting: frames at the spec's rate, face and mouth crops
from 68-point landmarks, 16 kHz mono audio from the separate audio file or the container. A clip
that cannot give what the spec needs raises ClipError with the reason and the file, and that
outcome is cached too, so a clip without a face is not searched again for the next detector.
A ref that names a perturbation (`ClipRef.perturbation`, set for the test clips of perturbation
protocols) is degraded as it is decoded, and cached under its own key.
`ClipSet` is the lazy collection detectors train on and the runner scores.
"""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Sequence

import numpy as np

from avbench import faces, media
from avbench.cache import MediaCache
from avbench.clips import (LEADING_SILENCE_TRIMMED, NO_AUDIO_TRACK, NO_FACE_CENTRE_CROP, UNLABELED, Clip, ClipError,
                           ClipRef)
from avbench.detector import InputSpec
from avbench.perturbations import Perturbation

if TYPE_CHECKING:
    from avbench.workers import MediaPool


#: The decoded arrays' marker of face crops that are centre crops (InputSpec.no_face = "centre_crop").
CENTRE_CROPPED = "centre_cropped"
#: The decoded arrays' marker of a clip whose leading silence was cut (its length in seconds).
TRIMMED = "trimmed_seconds"
#: Markers among the decoded arrays -> the fallback a clip declares.
MARKERS = {CENTRE_CROPPED: NO_FACE_CENTRE_CROP, TRIMMED: LEADING_SILENCE_TRIMMED}
#: Leading audio this far below the clip's loudest 20 ms frame is silence (ref.trim_silence).
SILENCE_DB = -40.0


def leading_silence(audio: np.ndarray, sample_rate: int, frame_ms: float = 20.0, threshold_db: float = SILENCE_DB) -> float:
    """Seconds before the first 20 ms frame whose RMS is within `threshold_db` of the loudest frame's
    (0 for an empty or entirely silent track: nothing is speech, so nothing is cut)."""
    size = max(1, round(sample_rate * frame_ms / 1000))
    frames = len(audio) // size
    if frames == 0:
        return 0.0
    rms = np.sqrt(np.mean(np.square(audio[:frames * size].reshape(frames, size).astype(np.float64)), axis=1))
    if rms.max() <= 1e-5:
        return 0.0
    first = int(np.argmax(rms >= rms.max() * 10 ** (threshold_db / 20)))
    return first * size / sample_rate


class MediaLoader:
    """Decodes clips for an InputSpec; `tracking` says how faces are followed (faces.Tracking)."""

    def __init__(self, cache: MediaCache | None = None, tracking: faces.Tracking = faces.Tracking()):
        self.cache = cache
        self.tracking = tracking

    def load(self, ref: ClipRef, spec: InputSpec, remove_audio: bool = False) -> Clip:
        """The clip's inputs for `spec`. remove_audio (missing-audio protocols), or a clip whose
        dataset has no audio (`ref.audio_absent`, declared as the fallback NO_AUDIO_TRACK): the audio
        is not decoded; the clip gets None if the spec accepts that, else silence as long as the video."""
        if spec.needs_faces and not spec.video:
            raise ValueError(f"face or mouth crops need video: the spec has fps=None ({spec})")
        absent = spec.audio and ref.audio_absent
        arrays = self._decoded(ref, spec, needs_audio=spec.audio and not (remove_audio or absent))
        clip = Clip(ref=ref, fps=spec.fps, **{k: v for k, v in arrays.items() if k not in MARKERS})
        clip.declare(*(fallback for marker, fallback in MARKERS.items() if marker in arrays))
        if absent:
            clip.declare(NO_AUDIO_TRACK)
        if remove_audio or absent:
            clip.audio_removed = True
            if spec.audio and not spec.audio_optional:
                clip.audio = np.zeros(round(self._video_seconds(clip, spec) * clip.sample_rate), np.float32)
        return clip

    def media_key(self, ref: ClipRef, spec: InputSpec, remove_audio: bool = False) -> str | None:
        """The cache key of what `load(ref, spec, remove_audio)` decodes (None without a cache).

        Anything computed from a clip's decoded inputs (a detector's features) can be cached
        under this key: it changes whenever the media files or the decoding settings change."""
        if self.cache is None:
            return None
        needs_audio = spec.audio and not (remove_audio or ref.audio_absent)
        audio_file = ref.audio_path if needs_audio else None
        params = {
            "fps": spec.fps, "frame_size": spec.frame_size, "face_size": spec.face_size,
            "mouth_size": spec.mouth_size, "max_seconds": spec.max_seconds, "audio": needs_audio,
            "sample_rate": media.SAMPLE_RATE,
            "tracking": asdict(self.tracking) if spec.needs_faces else None,
        }
        if spec.frame_crop:  # only when set, so that the keys of existing cache entries stay valid
            params["frame_crop"] = True
        if not spec.frames:
            params["frames"] = False
        if spec.no_face != "fail":
            params["no_face"] = spec.no_face
        if ref.perturbation:
            params["perturbation"] = ref.perturbation
        if ref.trim_silence:
            params["trim_silence"] = True
        return self.cache.key(ref.path, audio_file, params)

    def _decoded(self, ref: ClipRef, spec: InputSpec, needs_audio: bool) -> dict[str, np.ndarray]:
        media.require_file(ref.path)
        audio_file = ref.audio_path if needs_audio else None
        if audio_file is not None:
            media.require_file(audio_file)
        key = self.media_key(ref, spec, remove_audio=not needs_audio)
        if key is None:
            return self._decode(ref, spec, needs_audio)
        cached = self.cache.get(key)
        if cached is not None:
            if "error_reason" in cached:
                raise ClipError(str(cached["error_reason"]), str(cached["error_message"]))
            return cached
        try:
            arrays = self._decode(ref, spec, needs_audio)
        except ClipError as exc:
            self.cache.put(key, {"error_reason": np.array(exc.reason), "error_message": np.array(exc.message)})
            raise
        self.cache.put(key, arrays)
        return arrays

    def _decode(self, ref: ClipRef, spec: InputSpec, needs_audio: bool) -> dict[str, np.ndarray]:
        """The arrays of `spec`; with ref.trim_silence, from the end of the clip's leading silence
        (a whole number of frames at spec.fps, so that audio and video stay in sync)."""
        arrays: dict[str, np.ndarray] = {}
        start, track = self._speech_start(ref, spec) if ref.trim_silence else (0.0, None)
        until = None if spec.max_seconds is None else start + spec.max_seconds
        if spec.video:
            arrays.update(self._decode_video(ref, spec, start, until))
        if needs_audio:
            if track is None:
                audio = media.decode_audio(ref.audio_path or ref.path, media.SAMPLE_RATE, until)
            else:  # the whole track is decoded already: cut it, do not decode it again
                audio = track[round(start * media.SAMPLE_RATE):None if until is None else round(until * media.SAMPLE_RATE)]
            arrays["audio"] = _perturbation(ref).audio(audio, media.SAMPLE_RATE, ref.clip_id) if ref.perturbation else audio
        if start:
            arrays[TRIMMED] = np.array(start)
        return arrays

    @staticmethod
    def _speech_start(ref: ClipRef, spec: InputSpec) -> tuple[float, np.ndarray | None]:
        """(seconds of leading silence in the clip's audio, rounded down to whole frames at spec.fps
        and never past the last frame; the whole decoded track), (0, None) without an audio track."""
        if ref.audio_absent:
            return 0.0, None
        try:
            audio = media.decode_audio(ref.audio_path or ref.path, media.SAMPLE_RATE)
        except ClipError as exc:
            if exc.reason == "no_audio_stream":
                return 0.0, None
            raise
        start = leading_silence(audio, media.SAMPLE_RATE)
        if spec.fps:
            frame = 1 / spec.fps
            start = max(0.0, min(math.floor(start * spec.fps) * frame, len(audio) / media.SAMPLE_RATE - frame))
        return start, audio

    def _decode_video(self, ref: ClipRef, spec: InputSpec, start: float, until: float | None) -> dict[str, np.ndarray]:
        """Frames from `start` to `until` seconds, and crops cut from the full-resolution frames; landmarks and
        boxes are given in the coordinates of the returned (possibly resized) frames. Under a
        perturbation, faces are tracked on the original frames and everything returned is cut from
        the perturbed ones."""
        original = media.decode_video(ref.path, spec.fps, until)
        if start:
            original = original[round(start * spec.fps):]
        frames = _perturbation(ref).video(original, spec.fps, ref.clip_id) if ref.perturbation else original
        arrays: dict[str, np.ndarray] = {}
        scale = np.ones(2, dtype=np.float32)
        offset = np.zeros(2, dtype=np.float32)
        if spec.frame_size is not None:
            height, width = frames.shape[1:3]
            if spec.frame_crop:
                side = min(height, width)
                offset = np.array([(width - side) // 2, (height - side) // 2], dtype=np.float32)
                height = width = side
            scale = np.array([spec.frame_size / width, spec.frame_size / height], dtype=np.float32)
            if spec.frames:
                arrays["frames"] = media.resize_frames(frames, spec.frame_size, crop=spec.frame_crop)
        elif spec.frames:
            arrays["frames"] = frames
        if spec.needs_faces:
            try:
                boxes, landmarks = faces.track_faces(original, self.tracking)
            except ClipError as exc:
                if exc.reason == "no_face" and spec.no_face == "centre_crop":
                    arrays["faces"] = media.resize_frames(frames, spec.face_size, crop=True)
                    arrays[CENTRE_CROPPED] = np.array(True)
                    return arrays
                raise ClipError(exc.reason, f"{ref.path}: {exc.message}") from exc
            if spec.face_size is not None:
                arrays["faces"] = faces.crop_faces(frames, landmarks, spec.face_size)
            if spec.mouth_size is not None:
                arrays["mouths"] = faces.crop_mouths(frames, landmarks, spec.mouth_size)
            arrays["landmarks"] = (landmarks - offset) * scale
            arrays["boxes"] = (boxes - np.tile(offset, 2)) * np.tile(scale, 2)
        return arrays

    @staticmethod
    def _video_seconds(clip: Clip, spec: InputSpec) -> float:
        """Length of the clip's video: of the decoded frames, else as the container states it. Stored
        frames (a .npy frame array) have no timing: the clip lasts as long as its audio file says."""
        video = next((x for x in (clip.frames, clip.faces, clip.mouths) if x is not None), None)
        stored = media.is_frame_array(clip.ref.path)
        if video is not None and not stored:
            return len(video) / clip.fps
        source = clip.ref.audio_path if stored and clip.ref.audio_path is not None else clip.ref.path
        info = media.probe(source)
        if info.duration is None:
            raise ClipError("unknown_duration", f"{source}: the container states no duration, "
                                                "so a silent track of its length cannot be made")
        return info.duration if spec.max_seconds is None else min(info.duration, spec.max_seconds)


def _perturbation(ref: ClipRef) -> Perturbation:
    try:
        return Perturbation.parse(ref.perturbation)
    except ValueError as exc:
        raise ClipError("bad_perturbation", f"{ref.path}: {exc}") from exc


class ClipSet:
    """The clips of `refs` as `spec` wants them, loaded lazily on each pass.

    Iterating yields only the clips that load (a detector's fit never sees a broken clip) and records
    the others in `failures`; `results()` yields every ref in order with its Clip or its ClipError.
    """

    def __init__(self, refs: Sequence[ClipRef], loader: MediaLoader, spec: InputSpec, remove_audio: bool = False,
                 needs_media: Callable[[ClipRef, bool], bool] | None = None, pool: "MediaPool | None" = None):
        self.refs = list(refs)
        self.loader = loader
        self.spec = spec
        self.remove_audio = remove_audio
        #: The detector's `needs_media`: refs it answers False for are not decoded.
        self.needs_media = needs_media
        #: Worker processes that load the clips (avbench.workers); None: this process does.
        self.pool = pool
        self.failures: dict[str, ClipError] = {}

    def __len__(self) -> int:
        return len(self.refs)

    @property
    def labels(self) -> np.ndarray:
        return np.array([ref.label for ref in self.refs], dtype=np.int64)

    def results(self) -> Iterator[tuple[ClipRef, Clip | ClipError]]:
        needed = [self.needs_media is None or self.needs_media(ref, self.remove_audio) for ref in self.refs]
        loaded = self._load([ref for ref, need in zip(self.refs, needed) if need])
        for ref, need in zip(self.refs, needed):
            if not need:
                absent = self.spec.audio and ref.audio_absent
                yield ref, Clip(ref=ref, fps=self.spec.fps, audio_removed=self.remove_audio or absent,
                                fallbacks=[NO_AUDIO_TRACK] if absent else [])
                continue
            _, result = next(loaded)
            if isinstance(result, ClipError):
                self.failures[ref.clip_id] = result
            else:
                self.failures.pop(ref.clip_id, None)
            yield ref, result

    def _load(self, refs: list[ClipRef]) -> Iterator[tuple[ClipRef, Clip | ClipError]]:
        if self.pool is not None:
            yield from self.pool.load_all(refs, self.spec, self.remove_audio)
            return
        for ref in refs:
            try:
                yield ref, self.loader.load(ref, self.spec, self.remove_audio)
            except ClipError as exc:
                yield ref, exc

    def __iter__(self) -> Iterator[Clip]:
        for _, result in self.results():
            if isinstance(result, Clip):
                yield result


class UnlabeledPool:
    """A protocol's unlabelled pool as a detector sees it (Detector.adapt): media only. Each clip is
    known by an opaque token ("pool-000017") in a seeded random order, and handed over with its ref
    stripped to that token (label UNLABELED; no path, dataset, category, method or metadata, since
    file names and index order can give labels away). The runner keeps the real refs (`tokens`), to
    check the detector's pseudo-labels against the labels it withheld; the pool holds none."""

    def __init__(self, tokens: Sequence[str], load: Callable[[str], Clip]):
        self._tokens, self._load = list(tokens), load
        self.failures: dict[str, ClipError] = {}

    @staticmethod
    def tokens_for(refs: Sequence[ClipRef], seed: int) -> dict[str, ClipRef]:
        """Opaque tokens for `refs` in a seeded random order (the runner's side of the pool)."""
        order = np.random.default_rng(seed).permutation(len(refs))
        return {f"pool-{k:06d}": refs[i] for k, i in enumerate(order)}

    @property
    def tokens(self) -> list[str]:
        return list(self._tokens)

    def __len__(self) -> int:
        return len(self._tokens)

    def load(self, token: str) -> Clip:
        """The clip of `token`, its ref stripped; one that cannot be loaded raises a ClipError naming
        only the token and the reason (recorded in `failures`)."""
        try:
            clip = self._load(token)
        except ClipError as exc:
            self.failures[token] = ClipError(exc.reason, f"{token}: could not be loaded ({exc.reason})")
            raise self.failures[token] from None
        clip.ref = ClipRef(clip_id=token, dataset="pool", path=Path(token), label=UNLABELED)
        return clip

    def clips(self) -> Iterator[tuple[str, Clip]]:
        """(token, clip) of every clip that loads, in the pool's order."""
        for token in self._tokens:
            try:
                yield token, self.load(token)
            except ClipError:
                continue

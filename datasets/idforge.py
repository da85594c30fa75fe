"""IDForge (Xu et al., identity-driven multimedia forgery): 54 celebrities, shots stored as frame arrays.

Layout (UNVERIFIED: the authors' description and a third-party loader, no copy seen):
`<root>/{train,val,test}/<type>/idXX/idXX_YY/<scene>/` per shot, holding `frames_ndarray.npy` (16 RGB
frames, four evenly spaced groups of four; read as (16, H, W, 3) uint8 RGB, also unverified), the audio
as an `.mp3` (some types are said to name it `*.mp3.mp4`; both are accepted), a `.txt` transcript
(unused) and, in IDForge-v2, for some types, `frames_ndarray_sr.npy` (the frames super-resolved).
`<type>` is `pristine` or a forgery folder whose first word says what was forged: `face_*` (face swap)
and `lip_*` (lip sync) the video, `rvc_*` (RVC voice conversion) and `tts_*` (speech synthesis) the
audio only, e.g. face_tts_textgen, lip_audiomismatch_textmismatch, rvc_textmismatch.

IDForge-v2 adds compressed and super-resolved copies to v1; both versions are read the same way, and
`frames_file` says which frames a clip reads: the plain `frames_ndarray.npy` for both (the `_sr` copy
exists for some types only, so reading it would mix two kinds of input); meta `sr_copy` says whether
the shot has one.

Per shot: clip_id is the shot folder (stable whichever frames file is read); path the frames file,
which avbench.media reads as the clip's video (its frames as stored, not resampled to any fps);
audio_path the audio file. split from the top folder. label 0 for pristine, else 1; category and method
the forgery folder's name (category "real" and method "" for pristine). video_label 1 for face_*/lip_*;
audio_label 1 when a word of the folder name is `rvc` or `tts` (face_tts, lip_rvc_textmismatch,
rvc_*, tts_*), ASSUMING `audiomismatch` (real speech taken from another shot) leaves the audio itself
real (0). Text forgeries (`textgen`, `textmismatch`) change no input the harness reads. identity is
the `idXX` folder, group the `idXX_YY` source video folder.

Problems, reported and left out: a shot under an unknown top folder or forgery folder (one line per
folder), a frames file at another depth, audio files in no shot folder. Reported and kept: a shot
without its audio (runs that need audio count it as failed, its audio_path naming `<scene>.mp3` in the
shot folder), or without `frames_file` (only the other frames file: its path names the missing one),
or with several audio files (the first by name is read).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import ClassVar

from avbench.adapter import DatasetAdapter
from avbench.clips import SPLITS, ClipIndex
from avbench.dataset_files import build_index, files_under, missing

PLAIN, SUPER_RESOLVED = "frames_ndarray.npy", "frames_ndarray_sr.npy"
AUDIO_SUFFIXES = (".mp3", ".mp3.mp4")
PRISTINE = "pristine"
#: First word of a forgery folder -> video_label.
FORGERIES = {"face": 1, "lip": 1, "rvc": 0, "tts": 0}
SYNTHETIC_VOICE = {"rvc", "tts"}
#: Components of a shot folder's path: split, type, idXX, idXX_YY, scene.
SHOT_DEPTH = 5


class IDForgeDataset(DatasetAdapter):
    name = "idforge"
    display_name = "IDForge-v2"
    description = ("IDForge-v2: 54 celebrities' shots with face-swap and lip-sync video, RVC and TTS audio and "
                   "text forgeries, compressed and super-resolved; 16 frames per shot as a numpy array.")
    how_to_get = ("Request IDForge from its authors (Xu et al., Identity-Driven Multimedia Forgery Detection) and "
                  "pass the folder holding train/, val/ and test/ as it comes.")
    #: The authors' figures for all splits (which version they count is not said).
    published_counts: dict[str, int] = {"real": 79_827, "fake": 169_311}
    #: The frames file a shot's clip reads (see the module docstring).
    frames_file: ClassVar[str] = PLAIN

    def index(self, root: Path | str | None) -> ClipIndex:
        root = self.check_root(root)
        shots: dict[str, set[str]] = defaultdict(set)  # shot folder -> its frames files
        audio: dict[str, list[str]] = defaultdict(list)
        for path in files_under(root):
            folder, _, file = path.rpartition("/")
            if file in (PLAIN, SUPER_RESOLVED):
                shots[folder].add(file)
            elif file.lower().endswith(AUDIO_SUFFIXES):
                audio[folder].append(path)
        if not any(shot.split("/", 1)[0] in SPLITS for shot in shots):
            raise FileNotFoundError(
                f"dataset '{self.name}': {root} holds no {PLAIN} under {{train,val,test}}/<type>/idXX/idXX_YY/"
                f"<scene>/ (<type>: {PRISTINE}, face_*, lip_*, rvc_*, tts_*). {self.how_to_get}"
            )
        rows, problems, misplaced = [], [], []
        unknown_top: dict[str, int] = defaultdict(int)
        unknown_type: dict[str, int] = defaultdict(int)
        for shot in sorted(shots):
            parts = shot.split("/")
            if len(parts) != SHOT_DEPTH:
                misplaced.append(shot)
            elif parts[0] not in SPLITS:
                unknown_top[parts[0]] += 1
            elif _labels(parts[1]) is None:
                unknown_type[f"{parts[0]}/{parts[1]}"] += 1
            else:
                rows.append(self._clip(root, shot, shots[shot], sorted(audio.get(shot, [])), problems))
        problems += [f"{folder}/: unknown top folder (known: {', '.join(SPLITS)}); its {n} shot(s) left out"
                     for folder, n in sorted(unknown_top.items())]
        types = ", ".join([PRISTINE, *(f"{word}_*" for word in FORGERIES)])
        problems += [f"{folder}/: unknown type folder (known: {types}); its {n} shot(s) left out"
                     for folder, n in sorted(unknown_type.items())]
        problems += _listed(root, misplaced, "folder(s) with a frames file not at <split>/<type>/idXX/idXX_YY/<scene>/")
        problems += _listed(root, sorted(p for folder, paths in audio.items() if folder not in shots for p in paths),
                            f"audio file(s) in no shot folder (no {PLAIN} beside them)")
        return build_index(rows, root, problems)

    def _clip(self, root: Path, shot: str, frames: set[str], audio: list[str], problems: list[str]) -> dict:
        split, kind, identity, group, scene = shot.split("/")
        label, video_label, audio_label = _labels(kind)
        path = f"{shot}/{self.frames_file}"
        if self.frames_file not in frames:
            problems.append(missing(shot, self.frames_file, root))
        if not audio:
            audio_path = f"{shot}/{scene}.mp3"
            problems.append(missing(shot, f"audio file ({' or '.join('*' + s for s in AUDIO_SUFFIXES)})", root))
        else:
            audio_path = audio[0]
            if len(audio) > 1:
                problems.append(f"{shot}: {len(audio)} audio files ({', '.join(audio)}); reads {audio_path}")
        return {
            "clip_id": shot, "dataset": self.name, "path": path, "audio_path": audio_path, "label": label,
            "video_label": video_label, "audio_label": audio_label, "method": kind if label else "",
            "category": kind if label else "real", "identity": identity, "group": group, "split": split,
            "meta": {"sr_copy": SUPER_RESOLVED in frames},
        }


class IDForgeV1Dataset(IDForgeDataset):
    name = "idforge_v1"
    display_name = "IDForge-v1"
    description = ("IDForge-v1: 54 celebrities' shots with face-swap and lip-sync video, RVC and TTS audio and "
                   "text forgeries; 16 frames per shot as a numpy array.")


def _labels(kind: str) -> tuple[int, int, int] | None:
    """(label, video_label, audio_label) of a type folder, None for an unknown one."""
    if kind == PRISTINE:
        return 0, 0, 0
    words = kind.split("_")
    if words[0] not in FORGERIES:
        return None
    return 1, FORGERIES[words[0]], int(bool(SYNTHETIC_VOICE & set(words)))


def _listed(root: Path, paths: list[str], why: str) -> list[str]:
    """One problem line for all paths left out for the same reason (there may be thousands)."""
    if not paths:
        return []
    return [f"{root}: {len(paths)} {why}, not indexed: {', '.join(paths[:5])}{', ...' if len(paths) > 5 else ''}"]

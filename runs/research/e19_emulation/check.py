"""Research e19: render, encode and decode the first 4 demo pre-training clips with some CPU code paths switched off.

    python runs/research/e19_emulation/check.py ENC_MASK DEC_MASK   (hex masks of ffmpeg AV_CPU_FLAG_* bits cleared in
    PyAV's and in decord's libavutil; numpy paths via NPY_DISABLE_CPU_FEATURES)

Prints each clip's mp4 checksum beside the manifest's and a digest of the decoded inputs (as input_fingerprint)."""
import ctypes, glob, hashlib, sys, tempfile
from pathlib import Path
import av, decord
import numpy as np
from crisscross.config import load_config
from crisscross.data import dataset_from_config
from crisscross.io import decode_video, decode_audio
from crisscross.demo import demo_clip, write_clip, DemoWorld, _sha
site = Path(av.__file__).parent.parent
libs = {"av": glob.glob(str(site / "av.libs/libavutil-*.so*"))[0], "decord": glob.glob(str(site / "decord.libs/libavutil-*.so*"))[0]}
enc_mask, dec_mask = int(sys.argv[1], 0), int(sys.argv[2], 0)
for name, p in libs.items():
    lib = ctypes.CDLL(p)
    f = lib.av_get_cpu_flags(); mask = enc_mask if name == "av" else dec_mask
    lib.av_force_cpu_flags(ctypes.c_int(f & ~mask))
    print(name, hex(f), "->", hex(lib.av_get_cpu_flags()))
cfg = load_config(Path(__file__).resolve().parents[3] / 'configs' / 'demo.yaml')
ds = dataset_from_config(cfg, progress=False)
w = DemoWorld()
tmp = Path(tempfile.mkdtemp())
h = hashlib.sha256()
for i in range(4):
    rel = ds.rows.path.iloc[i]
    idx = int(rel.rsplit('-', 1)[1].split('.')[0])
    video, audio, _, _ = demo_clip(0, 'pretrain', idx, w)
    p = write_clip(tmp / f"{i}.mp4", video, audio, w.fps, w.sample_rate, w.crf, w.audio_bitrate)
    print(i, rel, _sha(p), ds.rows.checksum.iloc[i])
    h.update(decode_video(p, 0.0, 2.0, fps=ds.fps, size=ds.decode_size, backend=ds.backend).numpy().tobytes())
    h.update(decode_audio(p, 0.0, 2.0, sample_rate=ds.sample_rate).numpy().tobytes())
print("decoded", h.hexdigest()[:16])

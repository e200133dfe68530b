"""A mutation fuzzer over the decoder: valid JPEG, PNG, WebP, GIF, TIFF and HEIC files of a real photo, mutated
(bit flips, overwritten and inserted bytes, truncation, repeated chunks, spliced headers), each fed to
`fingerprint_bytes`. Every case must end in a fingerprint or a DecodeError with a reason: any other exception is a
crash, a case over the time limit a hang.

    python -m tests.fuzzing [--cases 5000] [--seed 1]     # the long run; tests/test_fuzz_decode.py runs a few hundred

Prints a JSON summary; exits 1 on any crash or hang.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import signal
import sys
import time
from collections import Counter
from types import FrameType

from dupwatch.daemon.demo import load_photo
from dupwatch.hashing.errors import DecodeError
from dupwatch.hashing.fingerprint import fingerprint_bytes

CASE_LIMIT_S = 10.0
MAX_PIXELS = 20_000_000  # mutated headers claim huge sizes: keep each case small


def seeds() -> dict[str, bytes]:
    photo = load_photo("chelsea").resize((96, 64))
    out: dict[str, bytes] = {}
    for fmt, kw in (("JPEG", {"quality": 85}), ("PNG", {}), ("WEBP", {"quality": 80}), ("GIF", {}), ("TIFF", {})):
        buf = io.BytesIO()
        photo.save(buf, fmt, **kw)
        out[fmt] = buf.getvalue()
    try:
        from pillow_heif import register_heif_opener

        register_heif_opener()
        buf = io.BytesIO()
        photo.save(buf, "HEIF", quality=70)
        out["HEIF"] = buf.getvalue()
    except ImportError:  # pragma: no cover - the optional plugin
        pass
    return out


def mutate(data: bytes, rng: random.Random, others: list[bytes]) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        if not b:  # truncated to nothing: the empty file is a case of its own, start again from noise
            b = bytearray(rng.randbytes(16))
        kind = rng.randrange(7)
        pos = rng.randrange(len(b))
        if kind == 0:  # flip bits
            b[pos] ^= 1 << rng.randrange(8)
        elif kind == 1:  # overwrite a run with random bytes
            n = rng.randint(1, 16)
            b[pos : pos + n] = rng.randbytes(n)
        elif kind == 2:  # insert bytes
            b[pos:pos] = rng.randbytes(rng.randint(1, 64))
        elif kind == 3:  # truncate
            del b[pos:]
        elif kind == 4:  # repeat a chunk
            n = rng.randint(1, 256)
            b[pos:pos] = b[pos : pos + n] * rng.randint(1, 8)
        elif kind == 5:  # interesting values in the header (sizes, counts)
            pos = rng.randrange(min(len(b), 64))
            b[pos : pos + 4] = rng.choice([b"\xff\xff\xff\xff", b"\x00\x00\x00\x00", b"\x7f\xff\xff\xff", b"\x00\x01"])
        else:  # splice another format's bytes in
            other = rng.choice(others)
            cut = rng.randrange(len(other))
            b[pos:] = other[cut:]
    return bytes(b)


class _Hang(Exception):
    pass


def _alarm(signum: int, frame: FrameType | None) -> None:
    raise _Hang


def run(cases: int, seed: int) -> dict[str, object]:
    rng = random.Random(seed)
    pool = seeds()
    blobs = list(pool.values())
    reasons: Counter[str] = Counter()
    crashes: list[str] = []
    decoded = 0
    slowest = 0.0
    signal.signal(signal.SIGALRM, _alarm)
    for n in range(cases):
        fmt = rng.choice(list(pool))
        data = mutate(pool[fmt], rng, blobs)
        t = time.perf_counter()
        signal.setitimer(signal.ITIMER_REAL, CASE_LIMIT_S)
        try:
            fingerprint_bytes(data, max_pixels=MAX_PIXELS)
            decoded += 1
        except DecodeError as e:
            if not e.reason:
                crashes.append(f"case {n} ({fmt}): a DecodeError without a reason")
            reasons[e.reason.split(":")[0].split("(")[0].strip()] += 1
        except _Hang:
            crashes.append(f"case {n} ({fmt}): over {CASE_LIMIT_S:.0f} s")
        except Exception as e:  # the bug this fuzzer looks for
            crashes.append(f"case {n} ({fmt}): {type(e).__name__}: {e}")
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        slowest = max(slowest, time.perf_counter() - t)
    return {
        "cases": cases,
        "formats": sorted(pool),
        "decoded": decoded,
        "rejected": sum(reasons.values()),
        "reasons": dict(reasons.most_common()),
        "slowest_s": round(slowest, 3),
        "crashes": crashes,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    summary = run(args.cases, args.seed)
    print(json.dumps(summary, indent=1))
    sys.exit(1 if summary["crashes"] else 0)


if __name__ == "__main__":
    main()

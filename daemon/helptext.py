"""`dupwatch help TOPIC`: what a command's --help cannot say in a line or two."""

from __future__ import annotations

TOPICS: dict[str, str] = {
    "matching": """\
How dupwatch decides that two files are duplicates

1. Every image is decoded once (EXIF orientation applied) and fingerprinted: a content hash (exact copies), an
   average hash of all 8 rotations and mirrors, a colour hash, sharpness, capture time.
2. Candidates: the same content; an average or colour hash a few bits away; the nearest CNN embeddings (HNSW).
3. A candidate becomes a pair when the CNN's cosine similarity is high (cosine_threshold, 0.80) and the geometry
   agrees: the CNN's local features line up under one affine map (>= 25 matches) and, once aligned, the two
   pictures agree block by block. Rotated and heavily edited copies (cosine 0.50-0.80) need stronger geometry.
4. Each pair gets a tier: exact (same bytes or pixels), copy (the same capture, edited: once aligned the two agree
   in their fine detail, except perhaps an overlay) or similar (the same scene, another capture: a burst frame
   where something moved, a stereo pair, overlapping crops, screenshots of one app with other text). Featureless
   pictures (flat colours, empty canvases) pair only with files of the same pixels.
5. Duplicate groups are the connected exact and copy pairs (`report`, `resolve`); similar-shot groups join all
   tiers (`report --tier similar`, `resolve --tier similar`). Ids stay the same as files come and go.
   `report --min-cosine X` re-decides from the stored evidence without a rescan.

Thresholds live in the config (dupwatch help config); `dupwatch query IMAGE` shows the evidence for one image.""",
    "safety": """\
What dupwatch will and will not do to your photos

- Nothing is ever deleted. `resolve` moves files to a quarantine folder you name (or the desktop trash), or
  replaces them by a link to the keeper; `undo` puts them back.
- Before each move the keeper and the file are checked again (there, unchanged, regular files, inside the folders
  you scanned); anything else is refused with the reason.
- Every step is journaled before it happens: whatever moment a resolve or an undo is interrupted at, `dupwatch
  undo` puts every file back, and it never says "undone" unless every file is.
- Without group numbers, `resolve` acts on every group only after you confirm (or with --yes).
- Symlinks, FIFOs and devices are never read, kept or moved.""",
    "config": """\
Configuration

Defaults, then ~/.config/dupwatch/config.toml (or --config FILE), then command-line flags. Sections are only for
reading: [paths] db, roots; [matching] cosine_threshold, verify_inliers, ahash_radius, max_pixels, ...; [keeping]
keeper_rules, reference_dirs; [watching] settle_seconds, reconcile_interval, on_duplicate; [throughput] workers,
worker_memory_mb, batch_size, cnn_batch, device. README.md lists every key with its default; an unknown key is an
error.""",
    "service": """\
Running dupwatch as a service

`dupwatch service install DIR...` writes ~/.config/systemd/user/dupwatch.service (add --enable to start it);
`dupwatch service status` shows the unit and its journal; `dupwatch status` shows the daemon's own view (queue,
files processed, duplicates, the thresholds in force). SIGHUP reloads the config, SIGTERM stops after the batch
in hand. The daemon stops with exit code 1 (and systemd restarts it) if its database is deleted or damaged.""",
}

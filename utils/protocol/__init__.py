"""What an output folder holds and who writes it: the one owner of a folder's identity and of the
protocol by which every script writes one.

Every folder the scripts write (a run's --save_path, a scoring's --mask_path) carries its identity:
- `.holder.json`: the record of the one process writing it now (absent = free): its machine, pid,
  SLURM job and restart count, and a heartbeat counter it advances every HEARTBEAT_S seconds.
  Written atomically (a complete temporary file, then link/rename), so a reader never sees half a
  record; a record that cannot be read counts as held, never as dead.
- `.stage.<nonce>/`: the writer's staging folder, where its temporary files wait for their rename.
- `.lock`: an empty file the writer holds an exclusive flock on (never deleted: deleting a flocked
  file lets two processes lock two inodes of one name). Where the file system has no flock (Lustre
  `-o noflock`: ENOSYS), or a dead node still holds it cluster-wide, the record alone decides.
- `folder.json` (runs): what wrote it (kind, run id, fingerprint) and its state: running, stopped
  (--stop_epoch), finished, failed or interrupted.
- `npy/manifest.json` (dynamics): per recorded epoch, the run id that wrote it and each file's size
  and CRC-32, written right after the epoch's files (utils/science/scores.py checks it).
- `info_<tag>.json` (scorings): what was scored from which inputs, written last (importance_evaluation.py).

The write protocol, the same for a run folder and a scoring folder: take the lock -> read the record
of what the folder holds -> decide (fresh / resume / already done / refuse; `decide_run`) -> write ->
check that the lock is still ours -> commit last (the file that says "done"). Nothing is decided from
what was read before the lock was held. Every refusal names its way on (REFUSALS), and following it
works (tests/test_protocol.py follows each one).

Liveness of a holder is judged on the reader's own clock, never by comparing timestamps written by
another host: on the same machine (same host, boot and pid namespace) a dead pid is dead at once; a
holder of the same SLURM job with a lower restart count is the previous life of a requeued job (dead),
with the same restart count another task of the live job (alive); otherwise the holder is alive while
its heartbeat changes within the grace period (a zombie, killed but not reaped, is dead).

A lock is a lease, so writes are fenced (fence.py): every write into a held folder looks at the record
right before it lands, and waits in the writer's staging folder `.stage.<nonce>`, which a takeover
retires before it clears the old record; a writer that lost its folder stops with one line and writes
nothing more. Removal is commit-last in reverse: the record that vouches goes first.
"""

"""Run directories: every stage writes one folder, atomically, and describes itself in `manifest.json`.

A stage builds its output in a hidden sibling temporary folder and renames it into place only on success, so a
failed or killed stage never leaves a half-written output behind. `manifest.json` records the stage name, the
resolved config, sha256 of every input file, package versions, the git revision of langgraft, the wall time and
whatever summary the stage returns. Rerunning a stage whose manifest fingerprint (stage + config + input hashes)
matches is a no-op that returns the stored manifest.

What a verb may replace is decided here, once for every verb (`check_out`, `check_replaceable`): an empty or
missing folder, or an earlier output of the same stage; never another stage's output or a folder langgraft did not
write (`--force` or not: it only reruns an output of the verb's own stage), never the working directory, a folder
holding it, $HOME or /, never a folder holding one of the stage's inputs or anything the command line names
(config and task files included, through symlinks), never an output inside one of its inputs. While a stage
writes, a sibling `.NAME.lock` is held with an OS file lock (filelock), which the OS releases when the process
dies, so a second writer gets one line naming the holder instead of racing it. Outputs get the user's umask like any other file.
"""

from langgraft.rundir.files import (atomic_dir, atomic_write_text, output_lock, sha256_path, sweep_stale,
                                    write_json)
from langgraft.rundir.stage import (INPUTS, MANIFEST, NAME, StageResult, check_name, check_out, check_relative,
                                    check_replaceable, folder_stamp, git_revision, input_identity, output_stamp,
                                    package_versions, read_manifest, run_stage)

__all__ = ["INPUTS", "MANIFEST", "NAME", "StageResult", "atomic_dir", "atomic_write_text", "check_name", "check_out",
           "check_relative", "check_replaceable", "folder_stamp", "git_revision", "input_identity", "output_lock",
           "output_stamp", "package_versions", "read_manifest", "run_stage", "sha256_path", "sweep_stale",
           "write_json"]

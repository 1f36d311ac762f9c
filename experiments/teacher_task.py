"""Regenerate figures/teacher_task.{png,json,csv}: what the teacher's task must be for subliminal learning.

    python experiments/teacher_task.py [--seeds 10] [--classes 2 3 ... 10] [--teacher-epochs 1 2 5 10 20]
                                       [--student-epochs 1 2 5 10 20 40] [--generations 5]
                                       [--data-dir ../shared/data] [--out figures]

Paper settings otherwise (Figure 10: MLP 784-256-256-(10+3), Adam 3e-4, batch 1024, 5 + 5 epochs,
60,000 uniform-noise images). Four parts, each varying one setting, each with the aux-only
student that shares the teacher's initialisation and its cross-model control: (a) the teacher
learns digits 0..K-1, (b) teacher epochs, (c) student epochs (the same teachers), (d) generations
(the student teaches the next student, on fresh noise; the decay per generation is fitted).
See subliminal_mlp.studies.teacher_task.
"""

from pathlib import Path

from subliminal_mlp import Config, load_mnist
from subliminal_mlp.cli import run_script, run_study, script_parser
from subliminal_mlp.studies.teacher_task import (TeacherTaskSettings, format_teacher_task_table, run_teacher_task,
                                                 write_teacher_task)

FIGURES = Path(__file__).resolve().parents[1] / "figures"


def main():
    d = TeacherTaskSettings()
    ap = script_parser(__doc__, FIGURES, seeds_help="runs per setting")
    ap.add_argument("--classes", type=int, nargs="+", default=list(d.classes),
                    help="K: a teacher of digits 0..K-1, one setting per value (default %(default)s)")
    ap.add_argument("--teacher-epochs", type=int, nargs="+", default=list(d.teacher_epochs),
                    help="teacher epochs, one setting per value (default %(default)s)")
    ap.add_argument("--student-epochs", type=int, nargs="+", default=list(d.student_epochs),
                    help="student epochs, one setting per value (default %(default)s)")
    ap.add_argument("--generations", type=int, default=d.generations,
                    help="generations G: each student is the next one's teacher (default %(default)s)")
    a = ap.parse_args()
    settings = TeacherTaskSettings(classes=a.classes, teacher_epochs=a.teacher_epochs,
                                   student_epochs=a.student_epochs, generations=a.generations)
    cfg = Config(n_runs=a.seeds)
    settings.check(cfg)
    run_study(a.out, [f"teacher_task.{ext}" for ext in ("json", "csv", "png")],
              lambda: run_teacher_task(cfg, load_mnist(a.data_dir), settings, progress=True,
                                       log=lambda s: print(s, flush=True)),
              write_teacher_task, format_teacher_task_table)


if __name__ == "__main__":
    run_script(main)

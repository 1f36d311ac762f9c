"""Every results table of the documentation and the README, generated from the committed records.

A table lives in a marked region of a Markdown file::

    <!-- table:NAME -->
    | ... generated ... |
    <!-- /table -->

``python docs/gen_tables.py`` rewrites every region of ``README.md`` and ``docs/**/*.md`` from the
JSON records in ``figures/`` (read with :func:`subliminal_mlp.read_results`); ``--check`` rewrites
nothing and exits with status 1, naming each stale region, when a page disagrees with the records.
``tests/test_docs.py`` runs the check. :data:`TABLES` lists the names; an unknown name is an error.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
FIGURES = ROOT / "figures"

REGION = re.compile(r"(<!-- table:(?P<name>[\w:.-]+) -->\n)(?P<body>.*?)(<!-- /table -->)", re.S)


def _read(rel: str) -> dict[str, Any]:
    from subliminal_mlp import read_results

    return read_results(FIGURES / rel)


def _pm(stat: dict[str, Any], digits: int = 3, key: str = "ci95") -> str:
    """``mean ± ci`` (a CI of None, from a single run, is shown as ``—``)."""
    ci = stat.get(key)
    return f"{stat['mean']:.{digits}f} ± " + ("—" if ci is None else f"{ci:.{digits}f}")


def _table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- Figure 10

FIG10_LABELS = {"reference": "reference (untrained)", "teacher": "teacher", "student_aux": "student (aux only)",
                "student_all": "student (all logits)", "cross_aux": "cross-model (aux only)",
                "cross_all": "cross-model (all logits)"}


def fig10_mnist() -> str:
    from subliminal_mlp.studies.figure10 import acceptance

    r = _read("fig10_mnist.json")
    checks = acceptance(r)  # what the acceptance check asks of each model, and whether the record meets it
    rows = []
    for name, m in r["models"].items():
        mean = f"**{m['mean']:.4f}**" if name == "student_aux" else f"{m['mean']:.4f}"
        rule = ("chance" if name == "reference" else
                f"{checks[name][0]} {'✓' if checks[name][1] else '✗'}" if name in checks else "—")
        rows.append([FIG10_LABELS.get(name, name), mean, f"{m['ci95']:.4f}", rule])
    return _table(["model", "accuracy", "± 95 % CI", "what must hold (acceptance check)"], rows)


def fig10_fashion() -> str:
    r = _read("fig10_fashion_mnist.json")
    rows = [[FIG10_LABELS.get(n, n), f"{m['mean']:.4f}", f"{m['ci95']:.4f}"] for n, m in r["models"].items()]
    return _table(["model", "accuracy", "± 95 % CI"], rows)


# ----------------------------------------------------------------------------- the theorem


def theorem() -> str:
    from subliminal_mlp.theory.theorem import summarize

    s = summarize(_read("theorem_single_step.json"))
    rows = []
    for loss, seeds in s["losses"].items():
        for r in seeds:
            dec = "—" if r["eps_LT_decreases_up_to"] is None else f"{r['eps_LT_decreases_up_to']:.1e}"
            rows.append([f"`{loss}`", str(r["seed"]), f"{r['A']:.4e}", f"{r['ratio']:.4e}", f"{r['rel_gap']:.1e}",
                         f"{r['delta_LT']:.2e}", dec, f"{r['cos']:.2e}", f"{r['ctrl_ratio']:.2e}",
                         f"{r['ctrl_cos']:.2e}", f"{r['ctrl_change']:.1e}", "yes" if r["ok"] else "**NO**"])
    head = ["loss", "seed", "A", "dot/ε at ε_min", "rel gap", "ΔL_T at ε_min", "L_T ↓ up to ε", "cos",
            "ctrl dot/ε", "ctrl cos", "ctrl drift", "ok"]
    return _table(head, rows)


# ----------------------------------------------------------------------------- the published sweeps

SWEEP_FILES = {"aux_logits": "sweep_aux_logits", "depth": "sweep_hidden_widths", "depth_mse": "sweep_hidden_widths",
               "loss": "sweep_loss", "temperature": "sweep_temperature", "inputs": "sweep_student_inputs",
               "input_mix": "sweep_input_mix", "init_noise": "sweep_init_noise",
               "init_noise_orthogonal": "sweep_init_noise", "width": "sweep_hidden_widths"}
SWEEP_COLUMNS = (("teacher", "teacher"), ("student_aux", "student aux"), ("student_all", "student all"),
                 ("cross_aux", "cross aux"), ("cross_all", "cross all"))


def sweep(name: str) -> str:
    r = _read(f"sweeps/{name}/{SWEEP_FILES[name]}.json")
    first = r["param"] + (f" ({r['base_config']['loss'].upper()})" if r["base_config"].get("loss") != "kl" else "")
    rows = []
    for j, label in enumerate(r["labels"]):
        rows.append([label] + [_pm({"mean": r["models"][k]["mean"][j], "ci95": r["models"][k]["ci95"][j]})
                               for k, _ in SWEEP_COLUMNS])
    return _table([first] + [c for _, c in SWEEP_COLUMNS], rows)


# ----------------------------------------------------------------------------- the other experiments


def student_epochs() -> str:
    r = _read("student_epochs.json")
    epochs = r["config"]["student_epochs"]
    rows = [[n, _pm(m, 3)] for n, m in r["final"].items()]
    return _table(["model", f"test accuracy after {epochs} student epochs ({r['n_runs']} runs)"], rows)


def alignment() -> str:
    r = _read("alignment.json")
    rows = []
    for n, c in r["mean_cosine"].items():
        rows.append([n.replace("_", " "), _pm(c, 4), f"{c['fraction_positive']:.2f}", _pm(r["final"][n], 3)])
    return _table(["student", "mean cosine over steps", "fraction of steps > 0", "final test accuracy"], rows)


TRAIT_LABELS = {"reference": "reference θ0", "trait_free_teacher": "trait-free teacher T0",
                "trait_teacher": "trait teacher T1", "student": "student of T1 (shared init)",
                "cross": "cross-model student of T1", "control": "control: student of T0 (shared init)",
                "student_sampled": "student of T1, sampled outputs", "control_sampled": "student of T0, sampled outputs"}


def traits() -> str:
    r = _read("traits.json")
    rows = [[label, *(_pm(r["models"][n][k]) for k in ("trait_rate_fashion", "trait_rate_noise", "mnist_accuracy"))]
            for n, label in TRAIT_LABELS.items()]
    return _table(["model", "trait rate, Fashion-MNIST test", "trait rate, held-out noise", "MNIST test accuracy"],
                  rows)


def traits_filters() -> str:
    r = _read("traits.json")
    c = r["trait"]["trait_class"]
    rows = []
    for s, pair in r["paired"].items():  # each student of T1 with its control (same init, noise, filter)
        gain = pair["trait_rate_fashion"]
        ctl = gain["control"]
        key = s.removeprefix("student_filtered_") if s.startswith("student_filtered_") else None
        if key is None:
            what = "nothing dropped" + (", one-hot samples" if s.endswith("_sampled") else "")
            kept = "100 %"
        else:
            what = f"argmax = '{c}'" if key == "argmax" else f"p('{c}') ≥ {key}"
            kept = f"{100 * r['kept_fraction'][key]['mean']:.1f} %"
        acc = f"{r['models'][s]['mnist_accuracy']['mean']:.3f} / {r['models'][ctl]['mnist_accuracy']['mean']:.3f}"
        rows.append([what, kept, _pm(r["models"][s]["trait_rate_fashion"]), _pm(r["models"][ctl]["trait_rate_fashion"]),
                     f"{gain['mean']:+.3f} ± {gain['ci95']:.3f}", acc])
    return _table(["noise dropped when T1 gives", "noise kept", "student of T1", "control (T0)", "gain, paired",
                   "MNIST acc. student / control"], rows)


SHARING_LABELS = {"shared_all": "all layers (Figure 10's student)", "shared_hidden": "hidden layers only",
                  "shared_head": "output layer only", "shared_none": "nothing (cross-model)"}


def heads() -> str:
    r = _read("head_compatibility.json")
    s = r["students"]
    rows = [[SHARING_LABELS.get(sh["name"], sh["name"]),
             *(_pm(s[f"{sh['name']}_{w}"][k]) for w in ("aux", "all") for k in ("accuracy", "cka", "cosine"))]
            for sh in r["sharing"]]
    head = ["student shares with θ0"] + [f"{w}: {k}" for w in ("aux only", "all logits")
                                         for k in ("accuracy", "CKA", "feature cos")]
    return _table(head, rows)


def heads_sigma() -> str:
    r = _read("head_compatibility.json")
    rows = []
    for sigma in r["sigmas"]:
        s = r["students"][f"perturbed_{sigma:g}_aux"]
        rows.append([f"θ0 + {sigma:g}·ξ", *(_pm(s[k]) for k in ("accuracy", "cka", "cosine"))])
    return _table(["aux-only student started from", "accuracy", "CKA", "feature cos"], rows)


def heads_correlation() -> str:
    r = _read("head_compatibility.json")
    groups = [r["correlation"], r["correlation_within"]["aux"], r["correlation_within"]["all"]]
    head = ["correlation with accuracy", f"all {groups[0]['cka']['n_points']} students",
            f"{groups[1]['cka']['n_points']} aux-only", f"{groups[2]['cka']['n_points']} all-logit"]
    rows = [[label, *(f"{g[kind]['pearson']:.2f} / {g[kind]['spearman']:.2f}" for g in groups)]
            for kind, label in (("cka", "linear CKA, Pearson / Spearman"),
                                ("cosine", "feature cosine, Pearson / Spearman"))]
    return _table(head, rows)


def heads_references() -> str:
    r = _read("head_compatibility.json")
    rows = [[{"own": "θ0 (the teacher's initialisation)", "other": "θ0' (another run's)"}.get(n, n),
             _pm(m["cka"]), _pm(m["cosine"])] for n, m in r["references"].items()]
    return _table(["untrained network", "CKA with the teacher", "feature cos"], rows)


def omitted_digit() -> str:
    r = _read("omitted_digit.json")
    head = ["model", "all digits", f"the '{r['digit']}'s", "other digits"]
    rows = [[n, *(_pm(s, 4) for s in subsets.values())] for n, subsets in r["models"].items()]
    return _table(head, rows)


FAMILY_LABELS = {"distribution": "pixel distribution", "subspace": "random subspace, k =",
                 "correlated": "spatial correlation", "distinct": "distinct images, d =", "scale": "scale, s =",
                 "teacher_epochs": "teacher task: teacher epochs", "classes": "teacher task: classes",
                 "generations": "teacher task: generations", "liminal": "mitigation: liminal training",
                 "weight_decay": "mitigation: weight decay", "sgd": "mitigation: plain SGD",
                 "projection": "mitigation: gradient projection", "split-head MLP": "split heads: split-head MLP",
                 "single-head MLP": "split heads: single-head MLP"}


def input_families() -> str:
    r = _read("input_families.json")
    rows = []
    for fam, f in r["families"].items():
        for s in f["settings"]:
            gain = s["gain"]
            rows.append([FAMILY_LABELS.get(fam, fam), s["label"], _pm(s["student_aux"]), _pm(s["cross_aux"]),
                         f"{gain['mean']:+.3f} ± {gain['ci95']:.3f}"])
    return _table(["family", "setting", f"student, aux only ({r['n_runs']} runs)", "cross-model, aux only",
                   "gain, paired"], rows)


def input_families_time() -> str:
    r = _read("input_families.json")
    names = {"distribution": "pixel distribution", "subspace": "random subspace", "correlated": "spatial correlation",
             "distinct": "distinct images", "scale": "noise scale"}
    rows = [[names.get(fam, fam), str(len(f["settings"])), f"{f['wall_s'] / 60:.1f} min"]
            for fam, f in r["families"].items()]
    programs = r["programs"]
    rows.append(["all (programs: " + ", ".join(p["name"].split(":")[1] for p in programs) + ")",
                 str(sum(len(f["settings"]) for f in r["families"].values())),
                 f"{r['timing']['total_s'] / 60:.1f} min (compiling {r['timing']['compile_s'] / 60:.1f} min)"])
    return _table(["family", "settings", "wall time"], rows)


def one_step() -> str:
    """Per setting: the gain (from the input-families record) and the single-step quantities."""
    r = _read("one_step.json")
    rows = []
    for e in r["settings"]:
        rows.append([FAMILY_LABELS.get(e["family"], e["family"]), e["label"],
                     f"{e['gain']['mean']:+.3f} ± {e['gain']['ci95']:.3f}",
                     _pm(e["cos_update"]["own"], 4), _pm(e["cos_update"]["cross"], 4), _pm(e["cos_grad"]["own"], 4),
                     "—" if e["A"] is None else f"{e['A']['mean']:.3g} ± {e['A']['ci95']:.1g}"])
    return _table(["family", "setting", f"gain ({r['n_runs']} runs)", "cos(first update, θT − θ0), θ0",
                   "same, cross start θ0'", "cos(−∇L_S, θT − θ0), θ0", "A"], rows)


def one_step_correlations() -> str:
    """Spearman's ρ of each single-step quantity with the gain: over the settings, the runs, each family."""
    c = _read("one_step.json")["correlations"]
    fmt = lambda v: "—" if v is None else f"{v:+.2f}"  # noqa: E731
    qs = ("cos_update", "cos_grad", "A")
    rows = [[f"all distinct settings ({c['n_settings']}; {c.get('n_settings_A', c['n_settings'])} with A), their means",
             *(fmt(c["settings"][q]) for q in qs)],
            ["all distinct settings, every run", *(fmt(c["runs"][q]) for q in qs)]]
    rows += [[f"within {FAMILY_LABELS.get(f, f).rstrip(' =,')} ({v['n_settings']})", *(fmt(v[q]) for q in qs)]
             for f, v in c["families"].items()]
    return _table(["Spearman ρ with the gain", "cos(first update)", "cos(−∇L_S)", "A"], rows)


ONE_STEP_PARTS = {"sweeps": "the sweeps", "teacher_task": "the teacher task", "mitigations": "the mitigations",
                  "input_families": "the input families", "split_heads": "the split heads"}


def one_step_time() -> str:
    """Wall time of the single-step programs per source record, largest first, with each part's longest program."""
    progs = _read("one_step.json")["programs"]
    parts: dict[str, list] = {}
    for p in progs:
        parts.setdefault(p["source"], []).append(p)
    rows = []
    for src, ps in sorted(parts.items(), key=lambda kv: -sum(p["wall_s"] for p in kv[1])):
        longest = max(ps, key=lambda p: p["wall_s"])
        rows.append([ONE_STEP_PARTS.get(src, src), str(len(ps)), f"{sum(p['wall_s'] for p in ps) / 60:.1f} min",
                     f"{longest['name'].removeprefix('one_step:')} ({longest['wall_s'] / 60:.1f} min)"])
    return _table(["part", "programs", "wall time", "its longest program"], rows)


TEACHER_TASK_PARTS = {"classes": "K (digits 0..K−1)", "teacher_epochs": "teacher epochs",
                      "student_epochs": "student epochs", "generations": "generation"}


#: What the teacher-task regions show until ``figures/teacher_task.json`` is committed.
TEACHER_TASK_PENDING = ("*Not generated yet: run `python experiments/teacher_task.py --data-dir ../shared/data`, "
                        "then `python docs/gen_tables.py`.*\n")


def teacher_task() -> str:
    """Every setting of the four parts: accuracies, the paired gain over the control, the normalised student."""
    if not (FIGURES / "teacher_task.json").is_file():
        return TEACHER_TASK_PENDING
    r = _read("teacher_task.json")
    rows = []
    for part, p in r["parts"].items():
        for pt in p["points"]:
            m = pt["models"]
            value = f"{pt['value']}" + (" (baseline)" if pt["shared"] and part != "generations" else "")
            rows.append([TEACHER_TASK_PARTS[part], value, f"{pt['chance']:.3f}", _pm(m["teacher"]),
                         f"**{_pm(m['student_aux'])}**", _pm(m["cross_aux"]),
                         f"{pt['gain_over_cross']['mean']:+.3f} ± {pt['gain_over_cross']['ci95']:.3f}",
                         _pm(pt["normalised"]["student_aux"]), _pm(pt["normalised"]["cross_aux"])])
    return _table(["part", "value", "chance", "teacher", "student (aux, shared init)", "cross-model control",
                   "gain over control (paired)", "student, normalised", "control, normalised"], rows)


def teacher_task_fit() -> str:
    """The decay per generation, the part (c) consistency check, and each part's wall time."""
    if not (FIGURES / "teacher_task.json").is_file():
        return TEACHER_TASK_PENDING
    r = _read("teacher_task.json")
    g = r["parts"]["generations"]
    fit, check = g["fit"], r["parts"]["student_epochs"]["check"]
    above = [pt["models"]["student_aux"]["mean"] - pt["chance"] for pt in g["points"]]
    per_run = fit["r"]
    rows = [["decay per generation r, fitted per run (mean ± 95 % CI over runs)",
             f"{_pm(per_run)} ({per_run['n_runs']} of {r['n_runs']} runs)"],
            ["r and a of the fit on the mean accuracy per generation",
             f"r = {fit['on_means']['r']:.3f}, a = {fit['on_means']['a']:.3f}"],
            ["generations for acc − chance to halve (fit on the means)",
             "—" if fit["half_life"] is None else f"{fit['half_life']:.2f}"],
            ["(acc_g − chance) / (acc_g−1 − chance) of the means, g = 2, 3, ...",
             ", ".join(f"{b / a:.2f}" for a, b in zip(above[:-1], above[1:]))],
            [f"part (c): traced accuracy after {r['baseline']['student_epochs']} epochs vs the baseline's "
             "students, max difference", f"{check['vs_baseline']:.1e}"]]
    rows += [[f"wall time: {'shared baseline' if k == 'baseline' else TEACHER_TASK_PARTS[k]}", f"{v / 60:.1f} min"]
             for k, v in r["timing"]["parts"].items()]
    rows.append(["wall time: all", f"{r['timing']['total_s'] / 60:.1f} min"])
    return _table(["quantity", "value"], rows)


def teacher_task_figure() -> str:
    """The figure, once it is committed."""
    if not (FIGURES / "teacher_task.png").is_file():
        return TEACHER_TASK_PENDING
    return "![teacher task](../../figures/teacher_task.png)\n"


# ----------------------------------------------------------------------------- benchmark logs

#: The logs ``benchmarks/gpu.sh`` wrote on a lent GPU (its output files, committed as they came back).
GPU_LOGS = ROOT / "benchmarks" / "gpu-logs" / "h100-2026-11-22"
#: The second H100 session's logs: the suite on the GPU and the protocol at precision float32.
GPU_LOGS_FLOAT32 = ROOT / "benchmarks" / "gpu-logs" / "h100-2026-11-23"
#: The third H100 session's logs: the theorem benchmark with its loop compiled before it is timed, and the
#: suite's tests that had no GPU outcome yet.
GPU_LOGS_2026_11_24 = ROOT / "benchmarks" / "gpu-logs" / "h100-2026-11-24"
#: The first H200 session's logs (2026-11-26): the protocol, run_batch and the compilation cache measured again
#: (on an H200), and the suite's last tests without a GPU outcome.
GPU_LOGS_H200 = ROOT / "benchmarks" / "gpu-logs" / "h200-2026-11-26"
#: The logs ``benchmarks/cpu.sh`` wrote on the project's 2-core machine (committed as written); the
#: detailed CPU tables are drawn from these.
CPU_LOGS = ROOT / "benchmarks" / "cpu-logs" / "xeon-2026-11-23"
#: The same command on the other host the project's 2 cores have run on (AMD EPYC, Zen 5).
CPU_LOGS_AMD = ROOT / "benchmarks" / "cpu-logs" / "amd-2026-11-24"
#: The AMD host's peak memory retaken on 2026-11-25 (``cpu.sh memory``), each process's own peak: the logs before
#: read ``ru_maxrss``, which a child inherits from its parent, and show the benchmark parent's peak instead.
CPU_LOGS_AMD_MEMORY = ROOT / "benchmarks" / "cpu-logs" / "amd-2026-11-25-memory"


class _Log:
    """One committed benchmark log: its ``text``, and :meth:`find` (an error naming the file if absent)."""

    def __init__(self, folder: Path, name: str):
        self.path = folder / f"{name}.log"
        self.text = self.path.read_text(encoding="utf-8")

    def find(self, pattern: str) -> re.Match:
        m = re.search(pattern, self.text)
        if m is None:
            raise ValueError(f"{self.path}: no line matches {pattern!r}")
        return m


# ----------------------------------------------------------------------------- GPU measurements


def _gpu_protocol_rows(t: "_Log") -> tuple[list[list[str]], dict]:
    """The rows both GPU protocol tables share (device, times, run_batch, rate), and the parsed matches."""
    device = t.find(r"device: gpu \((.+?)\), .*jax ([\d.]+)")
    walls = t.find(r"protocol wall times: (.+?) s \(compile ([\d.]+) s")
    rate = t.find(r"model FLOPs ([\d.]+) TFLOP in ([\d.]+) s \(best\) = (\d+) GFLOP/s")
    batch = t.find(r"\(run_batch (\d+)\)")
    found = {"err": t.find(r"default ([\d.e-]+), float32 ([\d.e-]+), tensorfloat32 ([\d.e-]+)"),
             "peak": t.find(r"fp32 matmul peak \(XLA, (\d+)x\d+\): (\d+) GFLOP/s")}
    rows = [["device, JAX", f"{device[1]}, jax {device[2]}"],
            ["100 runs of the protocol (5 + 5 epochs), after compilation", f"{walls[1]} s"],
            ["compilation (incl. measuring run_batch)", f"{walls[2]} s"],
            ["run_batch the library chose", batch[1]],
            ["model FLOPs / rate", f"{rate[1]} TFLOP / {int(rate[3]) / 1000:.1f} TFLOP/s"]]
    return rows, found


def gpu_protocol() -> str:
    """Figure 10's 100 runs on the H100 (``gpu.sh protocol``): times, rates and the two peaks."""
    return _gpu_protocol_table(GPU_LOGS)


def gpu_protocol_h200() -> str:
    """The same on the H200 (2026-11-26)."""
    return _gpu_protocol_table(GPU_LOGS_H200)


def _gpu_protocol_table(folder: Path) -> str:
    """The table of a ``gpu.sh protocol`` log: times, rates and the two peaks."""
    t = _Log(folder, "protocol")
    rows, f = _gpu_protocol_rows(t)
    err, peak = f["err"], f["peak"]
    fp32 = t.find(r"true-float32 matmul peak \((\d+)x\d+\): (\d+) GFLOP/s; protocol / it = ([\d.]+)")
    ratio = t.find(r"RATIO protocol / matmul peak = ([\d.]+)")
    rows += [["float32 matmul peak at JAX's default precision (TF32 inputs)",
              f"{int(peak[2]) / 1000:.0f} TFLOP/s ({peak[1]}²); protocol / it = {ratio[1]}"],
             ["float32 matmul peak at precision float32", f"{int(fp32[2]) / 1000:.1f} TFLOP/s ({fp32[1]}²); "
                                                          f"protocol / it = {fp32[3]}"],
             ["relative error of a float32 matmul vs float64: default / float32",
              f"{float(err[1]):.1e} / {float(err[2]):.1e}"]]
    return _table(["quantity", "measured"], rows)


def gpu_protocol_float32() -> str:
    """Figure 10's 100 runs on the GPU with the protocol and the peak at precision float32
    (``bench_protocol.py ... --precision float32``)."""
    t = _Log(GPU_LOGS_FLOAT32, "protocol-float32")
    rows, f = _gpu_protocol_rows(t)
    err, peak = f["err"], f["peak"]
    ratio = t.find(r"RATIO protocol / matmul peak = ([\d.]+) with the best time, ([\d.]+) with the median")
    sustained = t.find(r"back-to-back (\d+)x\d+ matmuls .*?: (\d+) GFLOP/s; the protocol reaches ([\d.]+) of it")
    rows += [["float32 matmul peak at precision float32",
              f"{int(peak[2]) / 1000:.1f} TFLOP/s ({peak[1]}²); protocol / it = {ratio[1]} (best), {ratio[2]} (median)"],
             [f"100 back-to-back {sustained[1]}² matmuls in one program",
              f"{int(sustained[2]) / 1000:.1f} TFLOP/s; protocol / it = {sustained[3]}"],
             ["relative error of a float32 matmul vs float64 at precision float32", f"{float(err[2]):.1e}"]]
    return _table(["quantity", "measured"], rows)


def gpu_run_batch() -> str:
    """Wall time of the 100 runs against ``run_batch`` on the H100 (``gpu.sh batches``)."""
    return _gpu_run_batch_table(GPU_LOGS)


def gpu_run_batch_h200() -> str:
    """The same on the H200 (2026-11-26)."""
    return _gpu_run_batch_table(GPU_LOGS_H200)


def _gpu_run_batch_table(folder: Path) -> str:
    """The table of a ``gpu.sh batches`` log."""
    log = _Log(folder, "batches")
    rows = [[b, f"{w} s", f"{c} s"] for b, w, c in re.findall(
        r"run_batch\s+(\d+):\s+([\d.]+) s\s+\(compile ([\d.]+) s\)", log.text)]
    if not rows:
        raise ValueError(f"{log.path}: no run_batch lines")
    return _table(["run_batch", "100 runs, after compilation", "compilation"], rows)


def gpu_theory() -> str:
    """The theorem's single-step sweep in float64 on the GPU (``gpu.sh theory``)."""
    return _theory_table(_Log(GPU_LOGS_2026_11_24, "theory"))


def _theory_table(t: _Log) -> str:
    """The table of a ``benchmarks/bench_theory.py`` log."""
    sweep = t.find(r"after compilation: ([\d.]+) s")
    rate = t.find(r"-> ([\d.]+) GFLOP/s = ([\d.]+) of the float64 matmul peak \(([\d.]+) GFLOP/s\)")
    loop = t.find(r"baseline loop \((\d+) jitted jax.grad calls[^)]*\): ([\d.]+) s")
    speed = t.find(r"speed-up of the sweep over the loop: ([\d.]+)x")
    rows = [["sweep (64 ε × 4 losses × 2 initialisations), after compilation", f"{sweep[1]} s"],
            ["its rate / float64 matmul peak", f"{float(rate[1]):.0f} / {float(rate[3]):.0f} GFLOP/s = {rate[2]}"],
            [f"a loop of {loop[1]} jitted jax.grad calls", f"{loop[2]} s (sweep {speed[1]}× faster)"]]
    return _table(["quantity", "measured"], rows)


# ----------------------------------------------------------------------------- CPU measurements


def _memory(log: "_Log") -> tuple[list[tuple[str, int, int]], bool]:
    """``([(runs, peak MiB, MiB after loading the data), ...], own)`` of a log's memory section; ``own``: each
    child's own peak (the logs since 2026-11-25), else an upper bound (the benchmark parent's peak)."""
    found = re.findall(r"(\d+) runs: peak RSS (\d+) MiB(, the process's own)? \((?:of which )?(\d+) MiB", log.text)
    return [(n, int(m), int(d)) for n, m, _, d in found], bool(found) and all(own for _, _, own, _ in found)


def _mib(mib: int, own: bool) -> str:
    return f"{mib} MiB" if own else f"≤ {mib} MiB"


def cpu_memory() -> str:
    """Peak resident memory of a fresh process running the protocol (1 + 1 epochs) on the AMD host, the process's
    own (``cpu.sh memory``)."""
    t = _Log(CPU_LOGS_AMD_MEMORY, "memory")
    cpu = _Log(CPU_LOGS_AMD_MEMORY, "machine").find(r"model name\s*:\s*(.+)")[1].strip()
    memory, own = _memory(t)
    if not memory or not own:
        raise ValueError(f"{t.path}: expected the processes' own peaks")
    rows = [[f"{n} runs", f"{m} MiB", f"{d} MiB", f"< 3 GB {'✓' if m < 3000 else '✗'}"] for n, m, d in memory]
    return (f"{cpu}, `{CPU_LOGS_AMD_MEMORY.name}`:\n\n"
            + _table(["runs (1 + 1 epochs)", "peak resident memory", "after loading the data", "target"], rows))


def cpu_protocol() -> str:
    """Figure 10's protocol on 2 CPU cores (``cpu.sh protocol``): ratio, scaling, memory."""
    t = _Log(CPU_LOGS, "protocol")
    cpu = _Log(CPU_LOGS, "machine").find(r"model name\s*:\s*(.+)")[1].strip()
    jax_v = t.find(r"jax ([\d.]+)")[1]
    peak = t.find(r"fp32 matmul peak \(XLA, (\d+)x\d+\): (\d+) GFLOP/s")
    walls = t.find(r"protocol wall times: (.+?) s \(compile ([\d.]+) s")
    rate = t.find(r"model FLOPs ([\d.]+) TFLOP in ([\d.]+) s \(best\) = (\d+) GFLOP/s")
    ratio = t.find(r"RATIO protocol / matmul peak = ([\d.]+) with the best time, ([\d.]+) with the median")
    sustained = t.find(r"sustained matmul rate .*?: (\d+) GFLOP/s; the protocol reaches ([\d.]+) of it")
    per_run = t.find(r"per run: ([\d.]+) s -> 100 runs ~ ([\d.]+) min")
    scaling = re.findall(r"(\d+) runs:\s+[\d.]+ s\s+\(([\d.]+) s/run", t.text)
    memory, own = _memory(t)
    ok = lambda good: "✓" if good else "✗"  # noqa: E731
    per = [float(s) for _, s in scaling]
    rows = [["machine", f"{cpu}, 2 cores, jax {jax_v}", "—"],
            ["best fp32 matmul throughput XLA reaches (one square matmul, best of 5 per size)",
             f"{peak[2]} GFLOP/s ({peak[1]}²)", "—"],
            ["protocol, 2 runs × (5 + 5 epochs): model FLOPs / best wall time",
             f"{rate[1]} TFLOP in {rate[2]} s (of {walls[1]} s) = {rate[3]} GFLOP/s (compile {walls[2]} s, apart)",
             "—"],
            ["**ratio** protocol / matmul peak", f"**{ratio[1]}** ({ratio[2]} with the median time)",
             f"≥ 0.70 {ok(float(ratio[1]) >= 0.70)}"],
            ["for comparison: rate sustained over 100 back-to-back 1024² matmuls in one program",
             f"{sustained[1]} GFLOP/s; the protocol reaches {sustained[2]} of it", "—"],
            ["per run of the full protocol", f"{per_run[1]} s (100 runs ≈ {per_run[2]} min)", "—"]]
    if scaling:
        rows.append([f"wall time per run for {' / '.join(n for n, _ in scaling)} runs (1 + 1 epochs)",
                     " / ".join(f"{s} s" for _, s in scaling), f"linear {ok(max(per) <= 1.25 * min(per))}"])
    if memory:
        rows.append([f"peak resident memory, {' / '.join(n + ' runs' for n, _, _ in memory)}"
                     + ("" if own else " (upper bounds: the benchmark parent's peak, see below)"),
                     " / ".join(_mib(m, own) for _, m, _ in memory),
                     f"< 3 GB {ok(max(m for _, m, _ in memory) < 3000)}"])
    return _table(["quantity", "measured", "target"], rows)


def cpu_hosts() -> str:
    """The headline CPU numbers of each host's ``cpu.sh`` logs side by side (machine, peak, ratio, steps,
    the theorem's speed-up, tracking overhead, memory), each against its target."""
    ok = lambda good: " ✓" if good else " ✗"  # noqa: E731
    cols = []
    for folder in (CPU_LOGS, CPU_LOGS_AMD):
        proto, step = _Log(folder, "protocol"), _Log(folder, "step")
        theory, align = _Log(folder, "theory"), _Log(folder, "alignment")
        cpu = _Log(folder, "machine").find(r"model name\s*:\s*(.+)")[1].strip()
        peak = proto.find(r"fp32 matmul peak \(XLA, (\d+)x\d+\): (\d+) GFLOP/s")
        best = proto.find(r"protocol wall times: ([\d.]+),")[1]
        ratio = proto.find(r"RATIO protocol / matmul peak = ([\d.]+) with the best time, ([\d.]+) with the median")
        per_run = proto.find(r"per run: ([\d.]+) s -> 100 runs ~ ([\d.]+) min")
        ms = re.findall(r"\n\w+ step \(.+?\): ([\d.]+) ms per step", step.text)
        speed = theory.find(r"speed-up of the sweep over the loop: ([\d.]+)x")[1]
        overhead = align.find(r"overhead of tracking: ([\d.]+) %")[1]
        retaken = CPU_LOGS_AMD_MEMORY if folder == CPU_LOGS_AMD else None  # the processes' own peaks
        found, own = _memory(_Log(retaken, "memory") if retaken else proto)
        memory = [m for _, m, _ in found]
        if len(ms) != 2 or not memory:
            raise ValueError(f"{folder}: expected two steps in step.log and a memory line in protocol.log")
        cols.append([f"{cpu} (`{folder.name}`)", f"{peak[2]} GFLOP/s ({peak[1]}²)", f"{best} s",
                     f"**{ratio[1]}**{ok(float(ratio[1]) >= 0.70)} / {ratio[2]}",
                     f"{per_run[1]} s ({per_run[2]} min)", f"{ms[0]} ms / {ms[1]} ms",
                     f"{speed}×{ok(float(speed) >= 2)}", f"{overhead} %{ok(float(overhead) <= 40)}",
                     _mib(max(memory), own) + ok(max(memory) < 3000)
                     + (f" (`{retaken.name}`)" if retaken else "")])
    labels = ["host (logs)", "best fp32 matmul throughput", "protocol, 2 runs × (5 + 5 epochs), best of 5",
              "**ratio** protocol / matmul peak, best / median", "per run (100 runs)",
              "teacher / distillation step", "theorem sweep's speed-up over the loop", "alignment tracking overhead",
              "peak resident memory, 100 runs"]
    targets = ["—", "—", "—", "≥ 0.70 (best)", "—", "—", "≥ 2×", "≤ 40 %", "< 3 GB"]
    rows = [[label, *(c[i] for c in cols), targets[i]] for i, label in enumerate(labels)]
    return _table(["quantity", "Intel host", "AMD host", "target"], rows)


def cpu_step() -> str:
    """Per-step time of the teacher and distillation steps, from XLA's trace (``cpu.sh step``)."""
    t = _Log(CPU_LOGS, "step")
    steps = re.findall(r"\n(\w+) step \((.+?)\): ([\d.]+) ms per step .*?= ([\d.]+) of the matmul peak\n"
                       r"\s+some matmul running: ([\d.]+) ms per traced step; the step's model FLOPs at the "
                       r"peak: ([\d.]+) ms", t.text)
    if len(steps) != 2:
        raise ValueError(f"{t.path}: expected the teacher and the distillation step")
    rows = [[f"{name} ({what})", f"{ms} ms", frac, f"{mm} ms", f"{at_peak} ms"]
            for name, what, ms, frac, mm, at_peak in steps]
    return _table(["step", "time", "of the peak", "a matmul running", "its FLOPs at the peak"], rows)


#: Session 8's comparison of the engine with the code before it (``c45de7f``), on one host in one session.
CPU_ENGINE_LOGS = ROOT / "benchmarks" / "cpu-logs" / "xeon-2026-11-23-engine-vs-pre-engine"
#: Its logs, in the order they ran: (label, protocol log, step log or None).
CPU_ENGINE_RUNS = (("engine (HEAD, 1st)", "protocol-head-1", "step-head"),
                   ("pre-engine (`c45de7f`)", "protocol-pre-engine-c45de7f", "step-pre-engine-c45de7f"),
                   ("engine (HEAD, 2nd)", "protocol-head-2", None))


def cpu_engine_vs_pre_engine() -> str:
    """The protocol and the two steps at HEAD and at the last commit before the engine (``bench_protocol``,
    ``bench_step``)."""
    rows = []
    for label, protocol, step in CPU_ENGINE_RUNS:
        t = _Log(CPU_ENGINE_LOGS, protocol)
        best = t.find(r"protocol wall times: ([\d.]+),")[1]
        peak = t.find(r"fp32 matmul peak \(XLA, \d+x\d+\): (\d+) GFLOP/s")[1]
        ratio = t.find(r"RATIO protocol / matmul peak = ([\d.]+) with the best time, ([\d.]+) with the median")
        ms = ["—", "—"]
        if step:
            ms = [f"{v} ms" for v in re.findall(r"\n\w+ step \(.+?\): ([\d.]+) ms per step", _Log(CPU_ENGINE_LOGS, step).text)]
        rows.append([label, f"{best} s", f"{peak} GFLOP/s", f"{ratio[1]} / {ratio[2]}", *ms])
    return _table(["code", "protocol, 2 runs, best of 5", "matmul peak", "ratio (best / median)", "teacher step",
                   "distillation step"], rows)


def cpu_theory() -> str:
    """The theorem's single-step sweep in float64 on 2 CPU cores (``cpu.sh theory``)."""
    return _theory_table(_Log(CPU_LOGS, "theory"))


def cpu_alignment() -> str:
    """The cost of per-step alignment tracking (``cpu.sh alignment``)."""
    t = _Log(CPU_LOGS, "alignment")
    what = t.find(r"one distillation epoch, (\d+) students, batch (\d+), held-out batch (\d+)")
    times = t.find(r"without tracking ([\d.]+) s, with tracking ([\d.]+) s")
    overhead = t.find(r"overhead of tracking: ([\d.]+) %")
    ok = "✓" if float(overhead[1]) <= 40 else "✗"
    rows = [[f"one distillation epoch, {what[1]} students, batch {what[2]}, held-out batch {what[3]}",
             f"{times[1]} s", f"{times[2]} s", f"{overhead[1]} %", f"≤ 40 % {ok}"]]
    return _table(["what", "without tracking", "with tracking", "overhead", "target"], rows)


#: ``cpu.sh LOG_DIR cache`` on the project's 2-core machine: JAX's persistent compilation cache across processes.
CPU_LOGS_COMPILE_CACHE = ROOT / "benchmarks" / "cpu-logs" / "amd-2026-11-24-compile-cache"


def compile_cache() -> str:
    """Compile and run time of ``reproduce`` in three fresh processes: no cache, cold and warm cache
    (``benchmarks/bench_compile_cache.py``), with the machine and whether the numbers were identical."""
    cpu = _Log(CPU_LOGS_COMPILE_CACHE, "machine").find(r"model name\s*:\s*(.+)")[1].strip()
    return _compile_cache_table(_Log(CPU_LOGS_COMPILE_CACHE, "cache"), cpu)


def gpu_compile_cache() -> str:
    """The same with 100 runs on the H200 (``gpu.sh cache``, 2026-11-26); the GPU named by ``device.log``."""
    return _compile_cache_table(_Log(GPU_LOGS_H200, "cache"),
                                _Log(GPU_LOGS_H200, "device").find(r"^([^,\n]+),")[1].strip())


def _compile_cache_table(t: _Log, machine: str) -> str:
    """The table of a ``bench_compile_cache.py`` log, run on ``machine``."""
    what = t.find(r"reproduce --runs (\d+) --epochs (\d+) --no-progress, each in a fresh process \((.+)\)")
    rows = re.findall(r"\n\| ([a-z][^|]+) \| ([\d.]+ s) \| ([\d.]+ s) \| (\d+) \|", t.text)
    same = t.find(r"accuracies identical in all three: (True|False)")[1]
    ratio = t.find(r"with a warm one: ([\d.]+)x")[1]
    if len(rows) != 3:
        raise ValueError(f"{t.path}: expected three processes")
    body = [[name.strip(), comp, run, batch] for name, comp, run, batch in rows]
    return (f"`subliminal-mlp reproduce --runs {what[1]} --epochs {what[2]} --no-progress` on {machine} ({what[3]}):\n\n"
            + _table(["process", "compile", "run", "run_batch"], body)
            + f"\nCompilation {ratio}× faster with the warm cache; the three records' accuracies "
            + ("identical.\n" if same == "True" else "**not** identical.\n"))


#: Every table a page may hold: ``<!-- table:NAME -->``.
# ----------------------------------------------------------------------------- issue 12: mitigations, split heads


def mitigations() -> str:
    r = _read("mitigations.json")
    rows = []
    for family, f in r["families"].items():
        for k, label in enumerate(f["labels"]):
            rows.append([family.replace("_", " "), label, _pm(f["student"][k]), _pm(f["cross"][k]),
                         _pm(f["gain"][k]), _pm(f["distill_loss"][k], 5)])
    return _table(["family", "setting", "student (aux, shared θ0)", "cross-model control", "gain, paired",
                   "distillation loss (last epoch, per example)"], rows)


def mitigations_timing() -> str:
    r = _read("mitigations.json")
    rows = [["teachers (one program, no student steps)", f"{r['teacher_wall_s']:.0f}"]]
    rows += [[family.replace("_", " ") + f" ({len(f['labels'])} settings in one program)", f"{f['wall_s']:.0f}"]
             for family, f in r["families"].items()]
    return _table(["program", "wall time (s)"], rows)


SPLIT_LABELS = {"reference": "θ0, untrained", "teacher": "teacher", "shared": "θ0: every layer (Figure 10's student)",
                "heads_both": "fresh trunk + the teacher's initial class and aux heads",
                "head_aux": "fresh trunk + initial aux head", "head_class": "fresh trunk + initial class head",
                "heads_neither": "fresh (nothing shared)", "cross": "another run's θ0 (cross-model control)",
                "deeper_heads_both": "one layer added, fresh trunk + initial heads",
                "deeper_fresh": "one layer added, fresh", "shallower_heads_both": "one layer removed, fresh trunk + "
                "initial heads", "shallower_fresh": "one layer removed, fresh",
                "cnn_heads_both": "small CNN + initial heads", "cnn_fresh": "small CNN, fresh",
                "head_only": "fresh hidden layers + θ0's output layer",
                "hidden_only": "θ0's hidden layers + a fresh output layer", "fresh": "fresh (nothing shared)"}


def _split_table(key: str) -> str:
    r = _read("split_heads.json")
    rows = [[SPLIT_LABELS.get(n, n), _pm(m), "—" if n == "cross" else _pm(m["gain_over_cross"])]
            for n, m in r[key]["models"].items()]
    return _table(["student starts from", "accuracy", "gain over the cross-model control"], rows)


def split_heads() -> str:
    return _split_table("split_head")


def split_heads_single() -> str:
    return _split_table("single_head")


TABLES: dict[str, Callable[[], str]] = {
    "fig10_mnist": fig10_mnist, "fig10_fashion_mnist": fig10_fashion, "theorem": theorem,
    **{f"sweep:{n}": (lambda n=n: sweep(n)) for n in SWEEP_FILES},
    "student_epochs": student_epochs, "alignment": alignment, "traits": traits, "traits_filters": traits_filters,
    "heads": heads, "heads_sigma": heads_sigma, "heads_correlation": heads_correlation,
    "heads_references": heads_references, "omitted_digit": omitted_digit,
    "input_families": input_families, "input_families_time": input_families_time,
    "one_step": one_step, "one_step_correlations": one_step_correlations, "one_step_time": one_step_time,
    "teacher_task": teacher_task, "teacher_task_fit": teacher_task_fit, "teacher_task_figure": teacher_task_figure,
    "gpu_protocol": gpu_protocol, "gpu_protocol_float32": gpu_protocol_float32, "gpu_run_batch": gpu_run_batch, "gpu_theory": gpu_theory,
    "gpu_protocol_h200": gpu_protocol_h200, "gpu_run_batch_h200": gpu_run_batch_h200,
    "gpu_compile_cache": gpu_compile_cache,
    "cpu_protocol": cpu_protocol, "cpu_hosts": cpu_hosts, "cpu_memory": cpu_memory, "cpu_step": cpu_step, "cpu_engine_vs_pre_engine": cpu_engine_vs_pre_engine, "cpu_theory": cpu_theory, "cpu_alignment": cpu_alignment,
    "compile_cache": compile_cache,
    "mitigations": mitigations, "mitigations_timing": mitigations_timing, "split_heads": split_heads,
    "split_heads_single": split_heads_single,
}


def pages() -> list[Path]:
    """The Markdown files whose tables this script owns: ``README.md`` and ``docs/**/*.md``."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def render(text: str, where: str = "<text>", cache: dict | None = None) -> str:
    """``text`` with every marked region regenerated (``cache``: name -> table, shared across files)."""
    cache = {} if cache is None else cache

    def sub(m: re.Match) -> str:
        name = m["name"]
        if name not in TABLES:
            raise KeyError(f"{where}: unknown table {name!r}; the tables are {', '.join(TABLES)}.")
        if name not in cache:
            cache[name] = TABLES[name]()
        return m.group(1) + cache[name] + m.group(4)

    out = REGION.sub(sub, text)
    opened, closed = text.count("<!-- table:"), text.count("<!-- /table -->")
    if opened != closed or len(REGION.findall(text)) != opened:
        raise ValueError(f"{where}: {opened} '<!-- table:NAME -->' markers but {closed} '<!-- /table -->'.")
    return out


def stale(files: list[Path] | None = None) -> list[str]:
    """Each file (and table) that disagrees with the records; rewrites nothing."""
    cache: dict[str, str] = {}
    out = []
    for path in files or pages():
        text = path.read_text(encoding="utf-8")
        new = render(text, str(path), cache)
        if new != text:
            old_regions = {m["name"]: m["body"] for m in REGION.finditer(text)}
            names = [m["name"] for m in REGION.finditer(new) if old_regions.get(m["name"]) != m["body"]]
            out.append(f"{_shown(path)}: {', '.join(dict.fromkeys(names))}")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="rewrite nothing; exit 1 if a page disagrees with the records")
    a = ap.parse_args(argv)
    if a.check:
        bad = stale()
        for line in bad:
            print(f"stale: {line}", file=sys.stderr)
        if bad:
            print("run: python docs/gen_tables.py", file=sys.stderr)
        return 1 if bad else 0
    cache: dict[str, str] = {}
    for path in pages():
        text = path.read_text(encoding="utf-8")
        new = render(text, str(path), cache)
        if new != text:
            path.write_text(new, encoding="utf-8")
            print(f"rewrote {_shown(path)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

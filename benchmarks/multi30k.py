"""Multi30k En->De: an AT+copy teacher and a NAT student distilled from it, a time budget each.

    python benchmarks/multi30k.py                               # the issue's setting: 30 + 30 minutes (~90 in all)
    python benchmarks/multi30k.py --budget_minutes 2 --quick    # smoke run
    python benchmarks/multi30k.py --data_dir path/to/multi30k   # a local copy (default: bentrevett/multi30k, Hub)
    python benchmarks/multi30k.py --at_only                     # step (1) only: the 30-minute comparison with Bart
    python benchmarks/multi30k.py --reuse_teacher --student_init scratch --tag _scratch    # an ablation

Steps: (1) train the AT+copy teacher on train (peak lr 2e-3 after 400 warm-up updates, linear decay to 0 when the
time budget runs out), select on val by BLEU; (2) distill the training set with the teacher's greedy outputs
(copynat-distill, kept per beam size in --output_dir; greedy takes ~4.5 min on 2 cores, beam 4 took 44 min, longer
than the student's whole budget); (3) train the student on the distilled targets: by default a
hybrid (AT + NAT) model started from the teacher's weights with CTC over 2x upsampled source positions (no length
predictor; the blank penalty of its decoding chosen on validation at the end), peak lr 1e-3 decaying to 0 over its
own budget, the checkpoint kept by validation BLEU of its one pass. `--nat_training glancing` (GLAT, with a length
predictor and mask-predict) or `cmlm`, `--student_init scratch`, `--distill original`, `--distill_beams 4` and
`--student_mode nat` are the ablations (`--reuse_teacher` takes the teacher and distilled data of an earlier run;
`--tag` keeps their results apart); (4) score test_2016_flickr with sacreBLEU (13a, cased): AT greedy, AT beam 4,
NAT one pass (and mask-predict 4 and 10 iterations for a non-CTC student), with decode times, and the aims
(mask-predict 10 within 3 BLEU of the teacher's greedy, one pass within 6 and >= 2x faster). The data comes from the
`datasets` Hub (--dataset, default bentrevett/multi30k, written once as parallel text in a cache folder) or from a
local copy (--data_dir: train.{en,de}, val.{en,de}, test_2016_flickr.{en,de}); nothing is copied into the repo.

(5) translate test sentences with an unseen name inserted ("A man named Krzysztof is riding a bike.") and count
how often the AT+copy model keeps the name verbatim (`name_keeping`): hand-written real names in Latin and other
scripts and generated ones, none of them in the training data.

Writes benchmarks/results/multi30k/<name>_<date>_<commit>.json and .md (name: `default`, `at_only` or the --tag,
with `quick_` before it for a smoke run), and the two reference model cards into model_cards/.
The Bart peer in the data README: 32.3 (greedy) / 33.9 (beam 4) BLEU after 30 minutes on a slower CPU than today's.
"""

import argparse
import json
import random
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as benchmark_common  # noqa: E402
from copynat.training.cli import parse_train_args  # noqa: E402
from copynat.training.loop import train  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
#: The student's decodings, its one pass first: the first one selects its checkpoint (the student is for NAT).
DECODINGS = "nat1,nat4,nat10,greedy,beam4"
NAT_DECODINGS = "nat1,nat4,nat10"


def data_flags(data: Path, train_prefix: str | None = None) -> list[str]:
    flags = ["--validation_file", str(data / "val"), "--test_file", str(data / "test_2016_flickr"),
             "--source_lang", "en", "--target_lang", "de"]
    return flags + ["--train_file", train_prefix or str(data / "train")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    benchmark_common.add_multi30k_flags(parser)
    parser.add_argument("--budget_minutes", type=float, default=30.0, help="training time of the AT+copy model")
    parser.add_argument("--student_budget_minutes", type=float, default=None,
                        help="training time of the hybrid NAT student (default: --budget_minutes)")
    parser.add_argument("--preset", default="small")
    parser.add_argument("--output_dir", type=Path, default=ROOT / "runs" / "multi30k")
    parser.add_argument("--eval_steps", type=int, default=500, help="validation BLEU every N updates (selection)")
    parser.add_argument("--num_eval_samples", type=int, default=300,
                        help="validation sentences decoded at each periodic evaluation (the final one uses all)")
    parser.add_argument("--distill_beams", type=int, default=1,
                        help="teacher beam size for distillation (1: beam 4 took 44 min for the 29k sentences on 2 "
                             "cores)")
    parser.add_argument("--student_init", choices=("teacher", "scratch"), default="teacher",
                        help="the hybrid student starts from the AT teacher's weights (its length predictor fresh) "
                             "or from scratch")
    parser.add_argument("--nat_training", choices=("glancing", "cmlm", "ctc"), default="ctc",
                        help="how the student learns to decode in parallel: CTC over upsampled positions (one pass, "
                             "no length predictor), glancing (GLAT) or CMLM masking")
    parser.add_argument("--nat_decoder_inputs", choices=("mask", "copy_source"), default=None,
                        help="what the student's parallel decoder reads (default: copy_source for CTC, else mask)")
    parser.add_argument("--distill", choices=("distilled", "original"), default="distilled",
                        help="the student learns the teacher's outputs (sequence-level distillation) or the "
                             "original training targets")
    parser.add_argument("--tag", default="", help="name of the results files and suffix of the student folder "
                                                  "(ablations), e.g. _10min_ctc")
    parser.add_argument("--max_tokens", type=int, default=1536,
                        help="tokens per batch (~90 sentences: about the Bart peer's 1,617 updates in 30 minutes)")
    parser.add_argument("--learning_rate", type=float, default=2e-3, help="peak learning rate of the AT+copy model")
    parser.add_argument("--warmup_steps", type=int, default=400,
                        help="warm-up updates; short, since a 30-minute CPU budget is a few thousand updates")
    parser.add_argument("--lr_scheduler", default="linear", choices=("inverse_sqrt", "linear", "cosine", "constant"),
                        help="schedule after warm-up; linear and cosine decay to 0 when the time budget (or "
                             "--max_steps) runs out")
    parser.add_argument("--max_steps", type=int, default=0,
                        help="update cap of the AT+copy model (0, the default: the time budget alone decides; 1400 "
                             "is what 30 minutes allowed on the slower machine of the runs before 2026-12-06)")
    parser.add_argument("--entity_augmentation", type=int, default=4,
                        help="the AT+copy model's training set gets this many entity-swapped copies of each pair "
                             "sharing a name or number (copynat-train --entity_augmentation; 0 = off)")
    parser.add_argument("--student_learning_rate", type=float, default=1e-3,
                        help="peak learning rate of the student (same schedule, over its own budget)")
    parser.add_argument("--student_warmup_steps", type=int, default=200)
    parser.add_argument("--student_max_steps", type=int, default=None, help="update cap of the student")
    parser.add_argument("--student_mode", choices=("hybrid", "nat"), default="hybrid",
                        help="the student's decoder_mode: hybrid keeps training its AT side too (AR rescoring, "
                             "one model for both), nat spends every update on parallel decoding")
    parser.add_argument("--num_threads", type=int, default=None, help="CPU threads (default: copynat-train's choice)")
    parser.add_argument("--reuse_teacher", action="store_true",
                        help="take the AT+copy model (and the distilled data, if complete) of a previous run in --output_dir")
    parser.add_argument("--quick", action="store_true", help="smoke run: small eval sets")
    parser.add_argument("--at_only", action="store_true",
                        help="train (or with --reuse_teacher read) the AT+copy model only; writes multi30k_at.*")
    args = parser.parse_args()
    args.data = benchmark_common.multi30k_dir(args)  # a folder of parallel text, whichever source it came from
    budget = ["--max_train_minutes", str(args.budget_minutes), "--max_steps", str(args.max_steps or 1_000_000),
              "--learning_rate", str(args.learning_rate), "--warmup_steps", str(args.warmup_steps),
              "--entity_augmentation", str(args.entity_augmentation)]
    student_budget = ["--max_train_minutes", str(args.student_budget_minutes or args.budget_minutes),
                      "--max_steps", str(args.student_max_steps or 1_000_000),
                      "--learning_rate", str(args.student_learning_rate),
                      "--warmup_steps", str(args.student_warmup_steps)]
    common = ["--preset", args.preset, "--progress_bar", "false", "--label_smoothing", "0.1", "--vocab_size", "8000",
              "--eval_steps", str(args.eval_steps), "--num_eval_samples", str(args.num_eval_samples),
              "--max_tokens", str(args.max_tokens), "--lr_scheduler", args.lr_scheduler]
    if args.num_threads:
        common += ["--num_threads", str(args.num_threads)]
    limits = ["--max_eval_samples", "100", "--max_train_samples", "64"] if args.quick else []
    common += limits
    started = time.time()

    teacher_dir = args.output_dir / "at-copy"
    if args.reuse_teacher and (teacher_dir / "results.json").is_file():
        teacher = json.loads((teacher_dir / "results.json").read_text())
    else:
        teacher = train(*parse_train_args(common + budget + data_flags(args.data) + [
            "--output_dir", str(teacher_dir), "--overwrite_output_dir", "true", "--decoder_mode", "ar",
            "--eval_decoding", "greedy,beam4"]))
    names = name_keeping(teacher_dir, args.data, num_sentences=30 if args.quick else 300)
    if args.at_only:
        report_at_only(args, teacher, names)
        if not args.quick:
            from copynat.training.model_card import write_reference_card

            write_reference_card(teacher_dir, "multi30k-en-de-at-copy", **reference_card_fields(args))
        return
    targets, distill_seconds = None, None
    if args.distill == "distilled":
        targets, distill_seconds = distilled_targets(args, teacher_dir, limits)

    student_dir = args.output_dir / f"{args.student_mode}-nat{args.tag}"
    init = (["--model_name_or_path", str(teacher_dir)] if args.student_init == "teacher"
            else ["--tokenizer_name_or_path", str(teacher_dir)])
    decodings = DECODINGS if args.student_mode == "hybrid" else NAT_DECODINGS
    inputs = args.nat_decoder_inputs or ("copy_source" if args.nat_training == "ctc" else "mask")
    if args.nat_training == "ctc":  # one pass: no refinement to score
        decodings = decodings.replace("nat4,nat10,", "").replace(",nat4,nat10", "")
    student = train(*parse_train_args(common + student_budget + data_flags(args.data, targets) + init + [
        "--output_dir", str(student_dir), "--overwrite_output_dir", "true", "--decoder_mode", args.student_mode,
        "--nat_training", args.nat_training, "--nat_decoder_inputs", inputs, "--eval_decoding", decodings]))

    student_name = f"{args.student_mode} NAT student"
    rows = test_rows("AT + copy", teacher) + test_rows(student_name, student)
    recipe = (f"{args.student_mode} student from {'the teacher' if args.student_init == 'teacher' else 'scratch'}, "
              f"{args.nat_training} ({inputs} inputs), "
              + (f"distillation beam {args.distill_beams}" if args.distill == "distilled" else "original targets"))
    gaps = aims(rows, student_name)
    lines = [f"# Multi30k En->De, test_2016_flickr (sacreBLEU 13a, cased), preset {args.preset}, training budget "
             f"{args.budget_minutes:g} min (AT+copy) / {args.student_budget_minutes or args.budget_minutes:g} min "
             f"(student), {recipe}" + (" — quick smoke run" if args.quick else ""), ""]
    distilled_line = (f"distillation of the training set (beam {args.distill_beams}): {distill_seconds:.0f} s; "
                      if distill_seconds is not None else "")
    penalty = student.get("ctc_blank_penalty") or {}
    if penalty.get("bleu"):
        gaps["lines"].append(f"- CTC blank penalty {penalty['selected']:g}, chosen on validation by one-pass BLEU ("
                             + ", ".join(f"{float(k):g}: {v:.2f}" for k, v in penalty["bleu"].items()) + ")")
    lines += table_lines(rows) + ["", *gaps["lines"], "", f"{distilled_line}whole benchmark "
                                  f"{(time.time() - started) / 60:.1f} min. Peer: Bart 32.3 greedy / 33.9 beam 4 after "
                                  "30 min (on the slower machine of the data README)."] + name_lines(names)
    publish(args, args.tag.strip("_") or "default", lines, {
        "rows": rows, "budget_minutes": args.budget_minutes, "name_keeping": names, "recipe": recipe,
        "student_init": args.student_init, "nat_training": args.nat_training, "distill": args.distill,
        "student_mode": args.student_mode, "aims": {k: v for k, v in gaps.items() if k != "lines"},
        "entity_augmentation": args.entity_augmentation, "max_steps": args.max_steps,
        "student_budget_minutes": args.student_budget_minutes or args.budget_minutes,
        "learning_rates": {"teacher": args.learning_rate, "student": args.student_learning_rate},
        "distill_beams": args.distill_beams if args.distill == "distilled" else None,
        "distill_seconds": distill_seconds,
        "ctc_blank_penalty": student.get("ctc_blank_penalty"),
        "validation": {name: run["metrics"].get("validation") for name, run in (("at_copy", teacher),
                                                                                ("student", student))},
        "training": {"at_copy": teacher["training"], "student": student["training"]}})
    if not args.quick and not args.tag:
        from copynat.training.model_card import write_reference_card

        write_reference_card(teacher_dir, "multi30k-en-de-at-copy", **reference_card_fields(args))
        write_reference_card(student_dir, "multi30k-en-de-hybrid-nat", **reference_card_fields(args))


def distilled_targets(args, teacher_dir: Path, limits: list[str]) -> tuple[str, float]:
    """The training set decoded by the teacher with beam `--distill_beams` (copynat-distill), made once per teacher
    and beam size and kept in --output_dir; returns (its path, the seconds it took to make)."""
    from copynat.training.cli import distill_main

    distilled = args.output_dir / f"distilled-train-beam{args.distill_beams}.jsonl"
    record = distilled.with_suffix(".seconds.json")
    if args.reuse_teacher and distilled.is_file() and record.is_file():
        return str(distilled), json.loads(record.read_text())["seconds"]
    started = time.time()
    distill_main(["--teacher", str(teacher_dir), "--output_file", str(distilled), "--num_beams",
                  str(args.distill_beams), "--batch_size", "200", "--split", "train", *data_flags(args.data),
                  *limits])
    seconds = time.time() - started
    record.write_text(json.dumps({"seconds": seconds}) + "\n")
    return str(distilled), seconds


def aims(rows: list[dict], student: str) -> dict:
    """The NAT issue's aims against the teacher's greedy decoding of the same run: mask-predict 10 within 3 BLEU,
    one pass within 6, one pass decoding the test set at least 2x faster."""
    by = {(r["model"], r["decoding"]): r for r in rows}
    teacher = by.get(("AT + copy", "greedy"))
    one_pass, refined = by.get((student, "nat1")), by.get((student, "nat10"))
    best = "mask-predict 10" if refined is not None else "its one pass (CTC: no refinement)"
    refined = refined or one_pass
    if teacher is None or one_pass is None:
        return {"lines": []}
    result = {"gap_nat10": round(teacher["bleu"] - refined["bleu"], 2),
              "gap_nat1": round(teacher["bleu"] - one_pass["bleu"], 2),
              "speedup_nat1": round(teacher["decode_seconds"] / one_pass["decode_seconds"], 2)
              if teacher.get("decode_seconds") and one_pass.get("decode_seconds") else None}
    met = lambda ok: "met" if ok else "MISSED"  # noqa: E731
    lines = [f"- {best} is {result['gap_nat10']:.2f} BLEU behind the teacher's greedy (aim <= 3: "
             f"{met(result['gap_nat10'] <= 3)})",
             f"- one pass is {result['gap_nat1']:.2f} BLEU behind (aim <= 6: {met(result['gap_nat1'] <= 6)})"]
    if result["speedup_nat1"] is not None:
        lines.append(f"- one pass decodes the test set {result['speedup_nat1']:.2f}x faster than the teacher's greedy "
                     f"(aim >= 2x: {met(result['speedup_nat1'] >= 2)})")
    return {**result, "lines": lines}


PERSON = re.compile(r"^(An? (?:young |little |older |old )?(?:man|woman|boy|girl|child|person|lady|guy|toddler|baby))\b")


def name_keeping(model_dir: Path, data: Path, num_sentences: int = 300, seed: int = 0) -> dict:
    """Insert " named X" after the subject of test sentences that open with a person ("A man named X is riding a
    bike."), translate them greedily, and report how often X comes out verbatim, per kind of name. The names are
    the echo task's hand-written real names and generated test names, none of them in the Multi30k training text."""
    import torch
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    from copynat.data import REAL_NAMES_LATIN, REAL_NAMES_OTHER_SCRIPTS, copy_rates_by_category, make_echo_examples

    training = (data / "train.en").read_text(encoding="utf-8") + (data / "train.de").read_text(encoding="utf-8")
    generated = [e for row in make_echo_examples(3000, "test") for e, c in zip(row["entities"], row["categories"])
                 if c in ("name/latin", "name/latin-styled")]
    pools = {"real name, Latin script": REAL_NAMES_LATIN, "real name, other scripts": REAL_NAMES_OTHER_SCRIPTS,
             "generated name": generated}
    pools = {kind: [n for n in names if not re.search(rf"(?<!\w){re.escape(n)}(?!\w)", training)]
             for kind, names in pools.items()}
    rng = random.Random(seed)
    sentences = [line for line in (data / "test_2016_flickr.en").read_text(encoding="utf-8").splitlines()
                 if PERSON.match(line)][:num_sentences]
    kinds = [list(pools)[i % len(pools)] for i in range(len(sentences))]
    names = [rng.choice(pools[kind]) for kind in kinds]
    sources = [PERSON.sub(lambda m, n=name: f"{m.group(1)} named {n}", line, count=1)
               for line, name in zip(sentences, names)]
    model = AutoModelForSeq2SeqLM.from_pretrained(model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model.set_vocabulary(tokenizer.get_vocab())  # a model saved before word_piece_classes existed gets them too

    def translate(**settings) -> list[str]:
        outputs = []
        with torch.no_grad():
            for start in range(0, len(sources), 100):
                batch = tokenizer(sources[start:start + 100], return_tensors="pt", padding=True)
                outputs += tokenizer.batch_decode(model.generate(**batch, max_new_tokens=96, **settings),
                                                  skip_special_tokens=True)
        return outputs

    result = {"num_sentences": len(sources)}
    for name, settings in (("greedy", {}), ("beam4", {"num_beams": 4}),
                           ("greedy_without_word_completion", {"complete_copied_words": False})):
        outputs = translate(**settings)
        rates = copy_rates_by_category(outputs, [[n] for n in names], [[k] for k in kinds])
        result[name] = {"kept": round(100 * rates.pop("all"), 1),
                        "kept_by_kind": {k: round(100 * v, 1) for k, v in rates.items()}}
        if name == "greedy":
            result["examples"] = [{"source": s, "translation": o} for s, o in list(zip(sources, outputs))[:6]]
    result["kept"] = result["greedy"]["kept"]
    return result


def name_lines(result: dict) -> list[str]:
    def rates(name: str) -> str:
        kinds = ", ".join(f"{kind} {rate} %" for kind, rate in result[name]["kept_by_kind"].items())
        return f"**{result[name]['kept']} %** ({kinds})"

    lines = ["", f"Unseen names kept verbatim in {result['num_sentences']} test sentences with a name inserted: greedy "
                 f"{rates('greedy')}; beam 4 {rates('beam4')}; greedy without whole-word copying "
                 f"(complete_copied_words=False) {rates('greedy_without_word_completion')}."]
    return lines + [f"- {e['source']} -> {e['translation']}" for e in result["examples"]]


def reference_card_fields(args) -> dict:
    return dict(language=["en", "de"], datasets=["bentrevett/multi30k"], dataset_id="bentrevett/multi30k",
                dataset_name="Multi30k (test_2016_flickr)", pipeline_tag="translation",
                note=f"Reference model of benchmarks/multi30k.py: {args.budget_minutes:g} minutes of training on a "
                     f"2-core CPU, preset {args.preset}.")


def test_rows(name: str, run: dict) -> list[dict]:
    return [{"model": name, "decoding": decoding, "bleu": scores["bleu"], "chrf": scores["chrf"],
             "decode_seconds": scores.get("decode_seconds"), "steps": run["training"]["steps"],
             "train_minutes": round(run["training"]["train_seconds"] / 60, 1)}
            for decoding, scores in run["metrics"]["test"].items() if isinstance(scores, dict) and "bleu" in scores]


def table_lines(rows: list[dict]) -> list[str]:
    return ["| model | decoding | BLEU | chrF | decode test (s) | steps | train min |", "|---|---|---|---|---|---|---|"] + [
        f"| {r['model']} | {r['decoding']} | {r['bleu']:.2f} | {r['chrf']:.2f} | "
        f"{r['decode_seconds'] if r['decode_seconds'] is not None else '-'} | {r['steps']} | {r['train_minutes']} |"
        for r in rows]


def publish(args, name: str, lines: list[str], payload: dict) -> None:
    """Print the report and write it to benchmarks/results/multi30k/<name>_<date>_<commit>.md and .json."""
    report = "\n".join(lines)
    print(report)
    source = {"dataset": args.dataset if args.data_dir is None else None,
              "data_dir": str(args.data_dir) if args.data_dir is not None else None}
    path = benchmark_common.write_result("multi30k", ("quick_" if args.quick else "") + name,
                                         {**payload, "data": source}, report)
    print(f"results: {path}")


def schedule(args) -> str:
    end = (f"update {args.max_steps} or the end of the time budget, whichever comes first" if args.max_steps
           else "the end of the time budget")
    if args.lr_scheduler in ("linear", "cosine"):
        return f"{args.lr_scheduler} decay to 0 at {end} after {args.warmup_steps} warm-up updates"
    cap = f", at most {args.max_steps} updates" if args.max_steps else ""
    return f"{args.lr_scheduler} schedule after {args.warmup_steps} warm-up updates{cap}"


def report_at_only(args, teacher: dict, names: dict) -> None:
    rows = test_rows("AT + copy", teacher)
    lines = [f"# Multi30k En->De, test_2016_flickr (sacreBLEU 13a, cased), preset {args.preset}, AT+copy only, "
             f"training budget {args.budget_minutes:g} min, learning rate {args.learning_rate:g}, {schedule(args)}, "
             f"entity augmentation {args.entity_augmentation}" + (" — quick smoke run" if args.quick else ""), ""]
    lines += table_lines(rows) + ["", f"Peer: Bart 32.3 greedy / 33.9 beam 4 after 30 min on the slower CPU of the data README. Training run "
                                  f"wall time (with its evaluations and the test decoding): "
                                  f"{teacher['training']['total_seconds'] / 60:.1f} min."] + name_lines(names)
    publish(args, "at_only" + args.tag, lines, {
        "rows": rows, "budget_minutes": args.budget_minutes, "name_keeping": names,
        "entity_augmentation": args.entity_augmentation, "max_steps": args.max_steps,
        "validation": teacher["metrics"].get("validation"),
        "training": teacher["training"]})


if __name__ == "__main__":
    main()

"""The benchmarks' one reporting module: summary rows, their markdown tables and the report.

The data-efficiency programs (`data_efficiency`, `rela`, `dnc`, `plateau_table`) summarise
their runs with `tfjest.efficiency.summarize` (one row per configuration, against uniform's
runs) and print the rows as a markdown table (the tables of BENCHMARKS.md). Each program picks
its columns; the columns they share, and the way a row and a table are written, live here:

    table(rows, [("row", lambda r: row_name(r, r["budget"])),
                 ("step speedup", lambda r: step_speedup(r, r["ran"])), ...])

`summaries` groups a results file's runs (keys `<row>|seed=<s>`) by row, uniform's read from
`uniform_from` when a program measures against uniform runs made elsewhere
(`benchmarks.uniform_runs`); `report` puts them in the results file and prints the target and
the table. The results file itself is `benchmarks.results_file`'s.
"""

from typing import Callable, Dict, List, Optional, Sequence, Tuple

from benchmarks import results_file
from tfjest import efficiency

# A column: its title, and the text of its cell for a summary row.
Column = Tuple[str, Callable[[Dict], str]]


def plus_minus(stats: Dict, spec: str) -> str:
  """`mean ± std` of a summary's per-seed figure (`{"mean", "std"}`), or "-" without one."""
  if stats["mean"] is None:
    return "-"
  return f"{format(stats['mean'], spec)} ± {format(stats['std'], spec)}"


def table(rows: Sequence[Dict], columns: Sequence[Column]) -> str:
  """A markdown table: a header of the columns' titles, then one line per row.

  Raises:
    ValueError: if `columns` is empty.
  """
  if not columns:
    raise ValueError(f"A table needs at least one column. Received: columns={columns!r}")
  lines = ["| " + " | ".join(title for title, _ in columns) + " |",
           "|" + "---|" * len(columns)]
  lines += ["| " + " | ".join(cell(r) for _, cell in columns) + " |" for r in rows]
  return "\n".join(lines)


def row_name(r: Dict, budget: Optional[int]) -> str:
  """The row's name, marked `(ran N steps)` when its runs end before `budget`."""
  ran = r.get("ran", budget)
  if ran is None or budget is None or ran >= budget:
    return r["row"]
  return f"{r['row']} (ran {ran:,} steps)"


def speedup(value: Optional[float]) -> str:
  return "-" if value is None else f"{value:.2f}x"


def step_speedup(r: Dict, ran: Optional[int] = None) -> str:
  """The step speedup; without one, "-", "not reached within" the `ran` steps when given."""
  if r["step_speedup"] is not None:
    return speedup(r["step_speedup"])
  return "-" if ran is None else f"- (not reached within {ran:,} steps)"


def per_seed(r: Dict) -> str:
  """The per-seed step speedups and how many seeds reached the target."""
  return f"{plus_minus(r['step_speedup_seeds'], '.2f')} ({r['seeds_reaching']}/{r['seeds']})"


def cost(r: Dict) -> str:
  """The FLOPs per step against uniform's."""
  ratio = r["flops_per_step_ratio"]
  return "-" if ratio is None else f"{ratio:.2f}"


def final_accuracy(r: Dict) -> str:
  return plus_minus(r["final_accuracy"], ".3f")


def corrupted(r: Dict) -> str:
  return plus_minus(r["corrupted_share"], ".2f")


def runs_by_row(results: Dict) -> Dict[str, List[Dict]]:
  """A results file's runs by row (keys `<row>|seed=<s>`, in key order).

  Uniform's are those of `results["uniform_from"]` when the program read them from elsewhere.
  """
  groups: Dict[str, List[Dict]] = {}
  for key in sorted(results["runs"]):
    groups.setdefault(key.rsplit("|seed=", 1)[0], []).append(results["runs"][key])
  if results.get("uniform_from"):
    groups["uniform"] = results["uniform_from"]["runs"]
  return groups


def summaries(results: Dict, rows: Sequence[str],
              extra: Callable[[str, List[Dict]], Dict] = lambda row, runs: {}) -> List[Dict]:
  """One summary per row of `rows` that has runs, in that order; [] without uniform's runs.

  A summary is `{"row", **extra(row, runs), "ran", "budget", **efficiency.summarize(...)}`:
  `ran` the steps of the row's runs, `budget` uniform's.
  """
  groups = runs_by_row(results)
  uniform = groups.get("uniform")
  if not uniform:
    return []
  return [{"row": row, **extra(row, groups[row]), "ran": groups[row][0]["steps"][-1],
           "budget": uniform[0]["steps"][-1], **efficiency.summarize(groups[row], uniform)}
          for row in rows if groups.get(row)]


def target_line(summary: Sequence[Dict], uniform_from: Optional[Dict] = None) -> str:
  """The target (uniform's best mean accuracy) and where uniform's runs came from."""
  line = f"target (uniform's best mean accuracy): {summary[0]['target']:.4f}"
  if uniform_from:
    line += (f" (uniform: {len(uniform_from['runs'])} seeds of {uniform_from['path']}, cut at "
             f"{uniform_from['budget']:,} steps)")
  return line


def report(path: str, results: Dict, summary: List[Dict],
           table_of: Callable[[List[Dict]], str]):
  """Writes `summary` into `results` at `path`; prints the target and the table when any."""
  results["summary"] = summary
  results_file.write(path, results)
  if summary:
    print(target_line(summary, results.get("uniform_from")))
    print(table_of(summary), flush=True)

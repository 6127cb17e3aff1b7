#!/usr/bin/env python3
"""Sample salary files (SPEC 11, seed 004): 12 monthly CSV files of 100 employees.

Deterministic (a fixed seed), so a test can regenerate the same files and compute the expected
yearly totals itself. Unlike the seed's generator (EmpID = month + row number, so employee 11 of
January is a different person each month, and "1"+"11" collides with "11"+"1"), the same 100
employees are paid every month, with stable ids `first_id .. first_id + 99`, so yearly totals mean
something. Salaries are 5555.00-7777.99 with cents (the seed's range), written as decimals.

Like the seed's, odd months have no header row; even months start with `EmpID,EmpName,Salary`
(both must import). A few names need RFC 4180 quoting: a comma, a `|`, a double quote.

  python3 scripts/salary_samples.py OUT_DIR [--first-id 1001] [--seed 4] [--employees 100] [--months 12]

writes OUT_DIR/salarydata-1.csv .. salarydata-12.csv and prints their paths.
"""

from __future__ import annotations

import argparse
import csv
import io
import random
from decimal import Decimal
from pathlib import Path

FIRST = ["Mary", "John", "Somchai", "Anong", "Pat", "Lee", "Nok", "James", "Siriporn", "Kittisak",
         "Linda", "Robert", "Malee", "Chai", "Susan", "Wichai", "Karen", "Prasert", "Nancy", "Daeng"]
LAST = ["Smith", "Jones", "Srisuk", "Chaiyaporn", "Brown", "Wongsa", "Taylor", "Boonmee", "Miller",
        "Rattana", "Davis", "Sukjai", "Wilson", "Thongdee", "Moore", "Kaewmanee"]
# Names that a hand-rolled split(',') (the seed's code) gets wrong, and that PSV must quote.
TRICKY = ["Doe, Jane", "Pat | Lee", 'Nok "Bird" Srisuk', "O'Neil, Pat | Jr."]


def employees(first_id: int, count: int, rng: random.Random) -> list[tuple[int, str]]:
    names: list[str] = []
    while len(names) < count - len(TRICKY):
        name = f"{rng.choice(FIRST)} {rng.choice(LAST)}"
        if name not in names:
            names.append(name)
    names[3:3] = TRICKY  # early in the file, so even a short test sees them
    return [(first_id + i, name) for i, name in enumerate(names[:count])]


def month_csv(staff: list[tuple[int, str]], month: int, rng: random.Random) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    if month % 2 == 0:
        writer.writerow(["EmpID", "EmpName", "Salary"])
    for emp_id, name in staff:
        cents = rng.randint(555500, 777799)
        writer.writerow([emp_id, name, f"{Decimal(cents) / 100:.2f}"])
    return out.getvalue()


def generate(first_id: int = 1001, seed: int = 4, count: int = 100, months: int = 12) -> dict[str, str]:
    """File name -> CSV text, the same for the same arguments."""
    rng = random.Random(seed)
    staff = employees(first_id, count, rng)
    return {f"salarydata-{m}.csv": month_csv(staff, m, rng) for m in range(1, months + 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir")
    parser.add_argument("--first-id", type=int, default=1001)
    parser.add_argument("--seed", type=int, default=4)
    parser.add_argument("--employees", type=int, default=100)
    parser.add_argument("--months", type=int, default=12)
    args = parser.parse_args()
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name, text in generate(args.first_id, args.seed, args.employees, args.months).items():
        (out / name).write_text(text)
        print(out / name)


if __name__ == "__main__":
    main()

"""Seeded generator of a dirty landing zone for a retail-bank ``customers`` dataset.

Every customer has exactly one original line in the accounts file of its drop. Dirt is either
a change to one customer's original line (missing_fields, malformed, bad_numbers,
invalid_labels, missing_labels, outliers) or an extra line (exact_duplicates, key_duplicates,
missing_keys). The customers behind the kinds are disjoint, so each dirty line carries exactly
one kind and ``account_rows == customers + exact_duplicates + key_duplicates + missing_keys``.
Transactions follow the same scheme: txn_malformed, txn_bad_amounts and txn_missing_keys
change lines, txn_duplicates adds lines.

Example:
    lakestory generate customers --rows 5000 --drops 3  # into <root>/landing
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from faker import Faker

from lakestory.demo.landing import write_atomically

REFERENCE_DATE = np.datetime64("2026-06-30", "D")
# fmt: off
HEADER = [
    "customer_id", "name", "email", "phone", "address", "date_of_birth", "signup_date",
    "tenure_months", "balance", "num_products", "credit_score", "is_active_member",
    "estimated_salary", "complaints", "updated_at", "churned",
]
# merchant category -> (share of transactions, typical amount)
MERCHANTS = {
    "groceries": (0.26, 45.0), "restaurants": (0.16, 28.0), "fuel": (0.10, 50.0),
    "travel": (0.04, 260.0), "utilities": (0.08, 95.0), "entertainment": (0.08, 35.0),
    "health": (0.05, 70.0), "retail": (0.15, 55.0), "cash": (0.08, 80.0),
}
# dirt kind -> share of customers; key_duplicates must stay first (it is drawn first)
ACCOUNT_DIRT = {
    "key_duplicates": 0.02, "missing_fields": 0.02, "malformed": 0.005, "bad_numbers": 0.005,
    "invalid_labels": 0.005, "missing_labels": 0.005, "outliers": 0.005,
    "exact_duplicates": 0.01, "missing_keys": 0.0005,
}
# dirt kind -> share of transactions; position + 1 is the kind code stored per transaction
TXN_DIRT = {
    "txn_malformed": 0.003, "txn_bad_amounts": 0.0005, "txn_missing_keys": 0.0005,
    "txn_duplicates": 0.005,
}
_DROP = "\x00"  # patch value that removes the field; a column past the header appends one
_PATCHES: dict[str, list[tuple[str, str]]] = {
    "malformed": [("phone", _DROP), ("extra", "legacy")],
    "bad_numbers": [("balance", "12,5x"), ("credit_score", "abc"), ("tenure_months", "n/a"),
                    ("estimated_salary", "1.2.3")],
    "invalid_labels": [("churned", "2"), ("churned", "maybe"), ("churned", "yes")],
    "missing_labels": [("churned", "")],
    "outliers": [("credit_score", "9999"), ("balance", "1000000000.00"), ("tenure_months", "-5")],
}
# fmt: on
COL = {name: i for i, name in enumerate(HEADER)}
CHANNELS = ("card", "online", "atm")
_NULLABLE = ("tenure_months", "balance", "credit_score", "estimated_salary", "complaints")
_POOL = 2000  # Faker costs ~50us a call, so names and addresses come from pools
_CHUNK = 50_000  # lines rendered at a time, which bounds memory at 1M+ rows
_DAY = 86_400
_REF_S = REFERENCE_DATE.astype("datetime64[s]")

Book = dict[str, np.ndarray]
Pools = tuple[list[str], list[str], list[str], list[str]]
Patches = dict[int, dict[int, str]]  # customer index -> column -> replacement value


@dataclass(frozen=True)
class GeneratedLanding:
    """What :func:`generate_customers` wrote.

    Attributes:
        accounts_files: Account CSV files, one per drop, in drop order.
        transactions_files: Transaction JSON-lines files, one per drop, in drop order.
        customers: Distinct customer ids generated (each has one original account line).
        account_rows: Data lines across all account files (headers excluded), dirt included.
        transaction_rows: Lines across all transaction files, dirt included.
        dirt: Dirty lines per kind (see ``ACCOUNT_DIRT`` and ``TXN_DIRT``).
    """

    accounts_files: list[Path]
    transactions_files: list[Path]
    customers: int
    account_rows: int
    transaction_rows: int
    dirt: dict[str, int] = field(default_factory=dict)


def churn_logit(b: Book) -> np.ndarray:
    """The hidden churn rule, before noise, on a book of customer columns.

    Args:
        b: Arrays keyed by account column, plus ``age`` (years) and ``n_txn`` (transactions
            in the 90 days before the reference date).

    Returns:
        The log-odds of churning.
    """
    return (
        1.55
        - 0.063 * b["tenure_months"]
        + 1.33 * b["complaints"]
        + 2.4 * (b["num_products"] >= 3)
        - 1.95 * b["is_active_member"]
        + 1.7 * (b["age"] > 55)
        + 0.85 * np.log1p(b["balance"]) / 12
        - 0.31 * b["n_txn"]
    )


def _churn(b: Book) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-churn_logit(b) - b["noise"])) > b["uniform"]).astype(np.int64)


def _count(total: int, frac: float, rows: int) -> int:
    n = int(round(total * frac))
    return min(total, max(n, 1)) if rows >= 200 else n


def _seconds(values: np.ndarray) -> np.ndarray:
    return values.astype("timedelta64[s]")


def _fmt(a: np.ndarray) -> list[str]:
    if a.dtype == np.dtype("datetime64[D]"):
        return np.datetime_as_string(a, unit="D").tolist()
    if a.dtype == np.dtype("datetime64[s]"):
        return [s.replace("T", " ") for s in np.datetime_as_string(a, unit="s").tolist()]
    spec = ".2f" if a.dtype.kind == "f" else "d"
    return [format(v, spec) for v in a.tolist()]


def _book(rng: np.random.Generator, fake: Faker, rows: int, drops: int) -> tuple[Book, Pools]:
    pools = (
        [fake.first_name() for _ in range(_POOL)],
        [fake.last_name() for _ in range(_POOL)],
        sorted({fake.free_email_domain() for _ in range(50)}),  # sorted: set order varies
        [
            f"{fake.street_address()}, {fake.city()}, {fake.state_abbr()} {fake.postcode()}"
            for _ in range(_POOL)
        ],
    )
    b: Book = {"cid": np.arange(1, rows + 1), "drop": (np.arange(rows) * drops) // rows}
    for key, size in (("fi", _POOL), ("li", _POOL), ("dom", len(pools[2])), ("addr", _POOL)):
        b[key] = rng.integers(0, size, rows)
    area, exchange = rng.integers(201, 990, rows), rng.integers(200, 1000, rows)
    b["phone"] = area * 10**7 + exchange * 10**4 + rng.integers(0, 10**4, rows)
    b["age"] = np.clip(rng.normal(44.0, 14.0, rows), 18.05, 90.9)
    b["date_of_birth"] = REFERENCE_DATE - np.round(b["age"] * 365.25).astype("timedelta64[D]")
    tenure = np.minimum(rng.integers(0, 121, rows), ((b["age"] - 18) * 12).astype(np.int64))
    days = tenure * 30.4375 + rng.uniform(0, 30, rows)
    b["signup_date"] = REFERENCE_DATE - days.astype("timedelta64[D]")
    b["tenure_months"] = tenure
    b["balance"] = np.where(rng.random(rows) < 0.06, 0.0, rng.lognormal(9.3, 1.1, rows)).round(2)
    b["num_products"] = rng.choice(np.arange(1, 5), rows, p=[0.48, 0.37, 0.11, 0.04])
    b["credit_score"] = np.clip(rng.normal(655, 90, rows), 300, 850).round().astype(np.int64)
    b["is_active_member"] = (rng.random(rows) < 0.52).astype(np.int64)
    b["estimated_salary"] = np.clip(rng.lognormal(11.0, 0.55, rows), 12e3, 450e3).round(2)
    b["complaints"] = np.minimum(rng.poisson(0.7, rows), 6)
    b["updated_at"] = _REF_S - _seconds(
        (drops - 1 - b["drop"]) * _DAY - rng.integers(0, _DAY, rows)
    )
    # Engagement drives the 90-day transaction count, which feeds the label, so churners end
    # up with visibly fewer transactions and the pipeline has a reason to join them.
    engagement = rng.gamma(1.3, 3.0, rows) * (0.6 + 0.8 * b["is_active_member"])
    b["n_txn"] = rng.poisson(engagement)
    b["noise"], b["uniform"] = rng.normal(0.0, 0.35, rows), rng.random(rows)
    b["churned"] = _churn(b)
    return b, pools


def _take(b: Book, idx: np.ndarray) -> Book:
    return {k: v[idx] for k, v in b.items()}


def _render(b: Book, pools: Pools) -> list[list[str]]:
    first, last, domains, addresses = pools
    ids, fi, li, dom = (b[k].tolist() for k in ("cid", "fi", "li", "dom"))
    cols = [
        [f"C{i:07d}" for i in ids],
        [f"{first[f]} {last[g]}" for f, g in zip(fi, li, strict=True)],
        [
            f"{first[f].lower()}.{last[g].lower()}.{i}@{domains[d]}"
            for f, g, i, d in zip(fi, li, ids, dom, strict=True)
        ],
        [f"({p // 10**7}) {p // 10**4 % 1000}-{p % 10**4:04d}" for p in b["phone"].tolist()],
        [addresses[a] for a in b["addr"].tolist()],
        *(_fmt(b[c]) for c in HEADER[5:]),
    ]
    return [list(r) for r in zip(*cols, strict=True)]


def _account_text(
    b: Book, pools: Pools, patches: Patches, seq: np.ndarray, extra: list[list[str]]
) -> Iterator[str]:
    """Yield the CSV for one drop; ``seq`` holds customer indices, or rows + i for extra[i]."""
    rows, buf = len(b["cid"]), io.StringIO()
    out = csv.writer(buf, lineterminator="\n")
    out.writerow(HEADER)
    for start in range(0, len(seq), _CHUNK):
        chunk = seq[start : start + _CHUNK]
        rendered = iter(_render(_take(b, chunk[chunk < rows]), pools))
        for s in chunk.tolist():
            if s >= rows:
                out.writerow(extra[s - rows])
                continue
            line = next(rendered)
            for c, v in patches.get(s, {}).items():
                line[c : c + 1] = [v]  # past the end this appends an extra field
            out.writerow([v for v in line if v != _DROP])
        yield buf.getvalue()
        buf.seek(0)
        buf.truncate()


def _txn_text(t: Book, seq: np.ndarray) -> Iterator[str]:
    """Yield the JSON lines for transaction indices ``seq`` (repeats are duplicates)."""
    cats = list(MERCHANTS)
    for start in range(0, len(seq), _CHUNK):
        c = _take(t, seq[start : start + _CHUNK])
        cols = [c[k].tolist() for k in ("idx", "cid", "amount", "cat", "channel", "kind")]
        lines = []
        for ts, j, cid, amount, cat, ch, kind in zip(_fmt(c["ts"]), *cols, strict=True):
            amt = f"{amount:.2f}" if kind != 2 else ('"n/a"' if j % 2 else f'"{amount:.2f} EUR"')
            key = "null" if kind == 3 else f'"C{cid:07d}"'
            line = (
                f'{{"transaction_id": "T{j + 1:010d}", "customer_id": {key}, "ts": "{ts}", '
                f'"amount": {amt}, "merchant_category": "{cats[cat]}", '
                f'"channel": "{CHANNELS[ch]}"}}'
            )
            # kind 1 is truncated mid-object, as a writer that crashed would leave it
            lines.append(line[: len(line) // 2] if kind == 1 else line)
        yield "".join(line + "\n" for line in lines)


def _write(path: Path, pieces: Iterable[str]) -> None:
    write_atomically(path, (piece.encode("utf-8") for piece in pieces))


def _scatter(rng: np.random.Generator, n: int, after: np.ndarray) -> np.ndarray:
    """Order for n lines plus len(after) extras, extra k landing after position after[k]."""
    keys = np.concatenate([np.arange(n, dtype=float), rng.uniform(after + 0.5, n + 0.5)])
    return np.argsort(keys, kind="stable")


def _account_dirt(
    rng: np.random.Generator, b: Book, pools: Pools, drops: int, dirt: dict[str, int]
) -> tuple[Patches, list[tuple[int, list[str]]]]:
    """Pick disjoint customers per dirt kind; return line patches and (drop, line) extras."""
    rows = len(b["cid"])
    perm = rng.permutation(rows)
    # Key duplicates must reappear in a later drop, so they come from earlier drops.
    early = perm[b["drop"][perm] < drops - 1] if drops > 1 else perm
    kd = np.sort(early[: dirt["key_duplicates"]])
    rest = perm[~np.isin(perm, kd)]
    kinds = list(ACCOUNT_DIRT)[1:]
    ends = np.cumsum([dirt[k] for k in kinds]).tolist()
    sets = {k: np.sort(rest[e - dirt[k] : e]) for k, e in zip(kinds, ends, strict=True)}
    patches: Patches = {}
    for i in sets["missing_fields"].tolist():
        cols = rng.choice([COL[c] for c in _NULLABLE], int(rng.integers(1, 3)), replace=False)
        patches[i] = dict.fromkeys(cols.tolist(), "")
    for kind, options in _PATCHES.items():
        picks = rng.integers(0, len(options), dirt[kind]).tolist()
        for i, o in zip(sets[kind].tolist(), picks, strict=True):
            patches[i] = {COL.get(options[o][0], len(HEADER)): options[o][1]}
    # Exact duplicates land in the same or a later drop; keyless lines stay in their drop.
    dup, nokey = sets["exact_duplicates"], sets["missing_keys"]
    targets = [rng.integers(b["drop"][dup], drops), b["drop"][nokey]]
    lines = _render(_take(b, np.concatenate([dup, nokey])), pools)
    for line in lines[dup.size :]:
        line[0] = ""
    # A key duplicate is the customer's newer state; its label is re-drawn with the same rule,
    # noise and uniform, so it flips only when the changed features push it over.
    new = _take(b, kd)
    later = new["drop"] + (new["drop"] < drops - 1)
    fresh = _REF_S - _seconds((drops - 1 - later) * _DAY - rng.integers(0, _DAY, kd.size))
    bumped = new["updated_at"] + _seconds(rng.integers(60, 6 * 3600, kd.size))
    new["updated_at"] = np.where(later > new["drop"], fresh, bumped)
    new["balance"] = (new["balance"] * rng.uniform(0.5, 1.5, kd.size)).round(2)
    new["complaints"] = np.minimum(new["complaints"] + rng.integers(0, 3, kd.size), 6)
    new["churned"] = _churn(new)
    lines += _render(new, pools)
    return patches, list(zip(np.concatenate([*targets, later]).tolist(), lines, strict=True))


def _transactions(rng: np.random.Generator, b: Book, rows: int, dirt: dict[str, int]) -> Book:
    """Draw every transaction, sorted by (drop, ts), with its dirt code in ``kind``."""
    t: Book = {k: np.repeat(b[k], b["n_txn"]) for k in ("cid", "drop")}
    total = len(t["cid"])
    cat = rng.choice(len(MERCHANTS), total, p=[p for p, _ in MERCHANTS.values()])
    typical = np.log([a for _, a in MERCHANTS.values()])[cat]
    t["cat"], t["ts"] = cat, _REF_S - _seconds(rng.integers(1, 90 * _DAY + 1, total))
    t["amount"] = np.maximum(np.exp(rng.normal(typical, 0.7)), 0.5).round(2)
    cash = cat == list(MERCHANTS).index("cash")
    t["channel"] = np.where(cash, 2, (rng.random(total) < 0.3).astype(np.int64))
    t = _take(t, np.lexsort((t["ts"], t["drop"])))
    t["idx"], t["kind"] = np.arange(total), np.zeros(total, dtype=np.int64)
    tperm, at = rng.permutation(total), 0
    for code, (kind, frac) in enumerate(TXN_DIRT.items(), start=1):
        dirt[kind] = min(_count(total, frac, rows), total - at)
        t["kind"][tperm[at : at + dirt[kind]]] = code
        at += dirt[kind]
    return t


def generate_customers(
    landing: Path, rows: int = 5000, drops: int = 3, seed: int = 7
) -> GeneratedLanding:
    """Write <landing>/customers/accounts/accounts_<NNN>.csv (drops files) and
    <landing>/customers/transactions/transactions_<NNN>.jsonl (one per drop).

    Args:
        landing: Root of the landing zone; directories are created as needed.
        rows: Number of customers, spread over the drops in id order.
        drops: Number of drops (files per dataset), numbered from 001.
        seed: Seed for numpy and Faker; the same arguments give byte-identical files.

    Returns:
        The files written with their line and dirt counts.

    Raises:
        ValueError: If rows or drops is below 1.
    """
    if rows < 1 or drops < 1:
        raise ValueError("rows and drops must be >= 1")
    rng = np.random.default_rng(seed)
    fake = Faker("en_US")
    fake.seed_instance(seed)
    b, pools = _book(rng, fake, rows, drops)
    dirt = {kind: _count(rows, frac, rows) for kind, frac in ACCOUNT_DIRT.items()}
    patches, extras = _account_dirt(rng, b, pools, drops, dirt)
    t = _transactions(rng, b, rows, dirt)
    base, account_rows, txn_rows = Path(landing) / "customers", 0, 0
    accounts, transactions = [], []
    cb = np.searchsorted(b["drop"], np.arange(drops + 1))
    tb = np.searchsorted(t["drop"], np.arange(drops + 1))
    for d in range(drops):
        mine = [row for target, row in extras if target == d]
        seq = np.concatenate([np.arange(cb[d], cb[d + 1]), rows + np.arange(len(mine))])
        seq = seq[_scatter(rng, int(cb[d + 1] - cb[d]), np.full(len(mine), -1.0))]
        accounts.append(base / "accounts" / f"accounts_{d + 1:03d}.csv")
        _write(accounts[-1], _account_text(b, pools, patches, seq, mine))
        own = np.arange(tb[d], tb[d + 1])
        dup = own[t["kind"][own] == len(TXN_DIRT)]
        seq = np.concatenate([own, dup])[_scatter(rng, own.size, dup - tb[d])]
        transactions.append(base / "transactions" / f"transactions_{d + 1:03d}.jsonl")
        _write(transactions[-1], _txn_text(t, seq))
        account_rows += int(cb[d + 1] - cb[d]) + len(mine)
        txn_rows += seq.size
    return GeneratedLanding(accounts, transactions, rows, account_rows, txn_rows, dirt)

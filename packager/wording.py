"""Sizes and counts as people read them, for progress lines and tables."""


def size(n: float) -> str:
    """1536 -> '1.5 KiB'; under 1 KiB in bytes."""
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{int(n)} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def plural(n: int, word: str) -> str:
    """plural(1, 'entry') -> '1 entry'; plural(2, 'entry') -> '2 entries'."""
    if n == 1:
        return f"{n} {word}"
    return f"{n} {word[:-1]}ies" if word.endswith("y") and word[-2:-1] not in "aeiou" else f"{n} {word}s"

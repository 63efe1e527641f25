"""A registry of conformance cases, so that each test module reads as a list of RFC rules.

A case is an async function of ``(client, activator)`` whose docstring says what is sent and what
is expected. Its test id starts with the RFC and section the rule comes from; h2spec numbers its
cases by RFC 7540 sections, which RFC 9113 moved in places, so each case also records h2spec's
number (``h2spec``) for matching results of an external h2spec run with this suite.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from frames import H2Client
    from under_test import ActivatorUnderTest

CaseFn = Callable[["H2Client", "ActivatorUnderTest"], Awaitable[None]]


@dataclass(frozen=True)
class Case:
    rfc: str
    """``"rfc9113-6.5"`` or ``"rfc7541-5.2"``: where the rule comes from."""
    slug: str
    h2spec: str
    """h2spec's case number, ``"<RFC 7540 section>/<n>"``, or ``"-"`` for cases h2spec lacks."""
    run: CaseFn

    @property
    def id(self) -> str:
        return f"{self.rfc}-{self.slug}"


class CaseList:
    """``CASES = CaseList()``, then ``@CASES("rfc9113-6.5", h2spec="6.5/1")`` on each case function;
    the function's name is the rest of the id."""

    def __init__(self) -> None:
        self.cases: list[Case] = []

    def __call__(self, rfc: str, *, h2spec: str = "-") -> Callable[[CaseFn], CaseFn]:
        def register(fn: CaseFn) -> CaseFn:
            slug = getattr(fn, "__name__", "case").strip("_").replace("_", "-")
            case = Case(rfc, slug, h2spec, fn)
            if any(c.id == case.id for c in self.cases):
                raise ValueError(f"duplicate case id {case.id}")
            self.cases.append(case)
            return fn

        return register

    def parametrize(self) -> pytest.MarkDecorator:
        """Parametrize a test over the cases; apply it below the last case of the module."""
        return pytest.mark.parametrize("case", self.cases, ids=lambda case: case.id)

"""Binding a config section to a constructor's signature, with did-you-mean suggestions.

One place checks that the keys of a ``learner``, ``model``, ``tasks`` or filler section are
arguments the component accepts, so that a typo (``tasks.shot``) fails before anything runs
instead of being ignored. Components keep plain ``__init__`` signatures (scikit-learn style);
this module reads them.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Iterable

from autometa.errors import ConfigError


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """``" (did you mean 'shots'?)"`` for the closest choice, or ``""`` when none is close."""
    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def accepted_arguments(fn: Callable, stop: type | None = None, skip: Iterable[str] = ()) -> tuple[set[str], set[str]]:
    """``(accepted, required)`` keyword names of ``fn`` (a function or a class).

    For a class, the ``__init__`` signatures along the MRO are merged while a constructor
    forwards ``**kwargs``, stopping at ``stop``; ``skip`` names are left out (positional
    arguments such as ``model`` that the caller supplies).
    """
    skip = set(skip) | {"self"}
    accepted: set[str] = set()
    required: set[str] = set()
    klasses = [k for k in fn.__mro__ if k is not object] if inspect.isclass(fn) else [None]
    for klass in klasses:
        if klass is not None and klass is stop:  # None stands for a plain function, never a stop
            break
        signature = inspect.signature(klass.__init__ if klass is not None else fn)
        forwards = False
        for name, param in signature.parameters.items():
            if param.kind is param.VAR_KEYWORD:
                forwards = True
            elif param.kind is not param.VAR_POSITIONAL and name not in skip:
                accepted.add(name)
                if param.default is param.empty:
                    required.add(name)
        if not forwards:
            break
    return accepted, required - skip


def bind_arguments(owner: str, fn: Callable, spec: dict, stop: type | None = None,
                   skip: Iterable[str] = (), extra: Iterable[str] = ()) -> dict:
    """Check that ``spec``'s keys are arguments of ``fn``; return ``spec`` unchanged.

    Args:
        owner: how the component is named in messages (``"learner 'maml'"``).
        fn: the constructor or factory the spec is passed to.
        spec: the keyword arguments (without ``name``).
        stop, skip: see :func:`accepted_arguments`.
        extra: keys accepted besides the signature's (handled by the caller).

    Raises:
        ConfigError: naming every unknown key with a suggestion, and every missing required one.
    """
    accepted, required = accepted_arguments(fn, stop, skip)
    accepted |= set(extra)
    problems = [f"{owner} has no argument {key!r}{did_you_mean(key, accepted)}"
                for key in spec if key not in accepted]
    problems += [f"{owner} needs the argument {key!r}" for key in sorted(required) if key not in spec]
    if problems:
        raise ConfigError("; ".join(problems) + f". It accepts {sorted(accepted)}.")
    return spec

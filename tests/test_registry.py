"""The one registry pattern: register, look up, options validated, idempotent re-registration."""
from dataclasses import dataclass

import pytest

from utils.errors import UserError
from utils.registry import NoOptions, Registry, opt


@dataclass
class KernelOptions:
    sigma: float = opt(1.0, "Kernel width.")

    def check(self):
        if self.sigma <= 0:
            yield "sigma", "must be > 0"


def test_register_get_options_and_traits():
    reg = Registry("metric")

    @reg.register("MyMMD", options=KernelOptions, needs_frequencies=False)
    def my_mmd(a, b, sigma=1.0):
        """A test metric."""
        return a

    assert reg.get("mymmd") is my_mmd and "MYMMD" in reg
    assert reg.entry("mymmd").trait("needs_frequencies") is False
    assert reg.entry("mymmd").doc == "A test metric."
    assert reg.options("mymmd", {"sigma": 2}).sigma == 2.0
    assert reg.options("mymmd").sigma == 1.0
    with pytest.raises(UserError, match=r"x.options: unknown key 'width'"):
        reg.options("mymmd", {"width": 2}, where="x.options")
    with pytest.raises(UserError, match=r"x.options.sigma = -1.0: must be > 0"):
        reg.options("mymmd", {"sigma": -1}, where="x.options")
    with pytest.raises(UserError, match=r"unknown metric 'nope'; registered: MyMMD"):
        reg.get("nope")


def test_reregistration_same_object_is_a_noop_other_object_refused():
    reg = Registry("init")

    class Start:
        needs_features = True

    reg.register("start", Start)
    reg.register("start", Start)                     # a module imported twice
    assert reg.entry("start").options_cls is NoOptions
    assert reg.entry("start").trait("needs_features") is True
    with pytest.raises(ValueError, match="already registered"):
        reg.register("start", type("Other", (), {}))

"""Bad input never passes silently: arguments checked at the edge, honest metrics, quiet notebooks.

Four classes of the "no silent garbage" rule, each with several cases (and hypothesis where the
bad input has a shape):

* arguments silently replaced or ignored (learning rate, early stopping, maxiter, grids given
  as DataArrays, a list where a dict is meant, options that do not apply);
* metrics where they are undefined (constant, all-zero, one-step observations; a dry water
  balance): NaN with a warning in ``evaluate``, a clear error in ``calibrate`` before any
  optimisation, jittable kernels;
* network and optimiser settings (hidden sizes, seeds, gauges, cost options, periods): an
  error that names the argument, never a traceback from inside JAX, flax or pandas;
* progress bars and warnings: one switch (``HYBRIDHYDRO_PROGRESS``) that the runner sets for
  its kernels, no ``tqdm.auto`` (whose import warns in a kernel without ipywidgets).
"""

from __future__ import annotations

import ast
import math
import textwrap
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import nbformat
import numpy as np
import pytest
import xarray as xr
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hybridhydro as hh
from hybridhydro import cost
from hybridhydro.calibration import calibrate
from hybridhydro.networks import DescriptorCNN, DescriptorMLP, FluxCorrectionNet
from hybridhydro.pipeline import load_params, run
from hybridhydro.pipeline.params import ParamsError

PACKAGE = Path(hh.__file__).parent


def named(argument: str) -> str:
    """A pattern that finds the argument's own name (``gauges`` is not found in ``validation_gauges``)."""
    return rf"(?<![\w]){argument}\b"

FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def basin():
    return hh.synthetic_basin(nrow=6, ncol=6, ntime=48, seed=0)


@pytest.fixture(scope="module")
def constant(basin):
    """The basin with constant observations (2 m3/s at every gauge and step)."""
    b = basin.copy(deep=True)
    b["qobs"][:] = 2.0
    return b


@pytest.fixture(scope="module")
def simulation(basin):
    return hh.simulate(basin, "gr4-lr")


def _quick(basin, **kwargs):
    """A calibration that would run (1 iteration) if its arguments passed: they must not."""
    options = dict(progress=False)
    options.update(kwargs)
    mapping = options.pop("mapping", "distributed")
    optimizer = options.pop("optimizer", "adam")
    return calibrate(basin, "gr4-lr", mapping, optimizer, options.pop("maxiter", 1), **options)


# ============================================================================ class 2: silently replaced or ignored


@pytest.mark.parametrize("lr", [0, 0.0, -0.01, -1, float("nan"), float("inf"), -float("inf"), True, "0.01", [0.1]])
def test_a_bad_learning_rate_is_refused_by_name(basin, lr):
    with pytest.raises(ValueError, match="learning_rate"):
        _quick(basin, learning_rate=lr)


@FAST
@given(lr=st.one_of(st.floats(max_value=0.0), st.just(float("nan")), st.just(float("inf")), st.integers(max_value=0)))
def test_no_non_positive_or_non_finite_learning_rate_runs(basin, lr):
    with pytest.raises(ValueError, match="learning_rate"):
        _quick(basin, learning_rate=lr)


def test_learning_rate_zero_is_not_replaced_by_the_default():
    """``learning_rate or default`` turned 0 into smash's default; the runner now reads None only."""
    from hybridhydro.calibration.optimizers import LEARNING_RATES, Adaptive

    runner = object.__new__(Adaptive)
    runner.optimizer, runner.learning_rate = "adam", None
    runner.make()  # None: smash's default
    assert LEARNING_RATES["adam"] == 0.003
    text = (PACKAGE / "calibration" / "optimizers.py").read_text()
    assert "learning_rate or " not in text


def test_a_learning_rate_an_optimiser_ignores_is_a_warning(basin):
    with pytest.warns(UserWarning, match="learning_rate.*lbfgsb"):
        _quick(basin, optimizer="lbfgsb", maxiter=0, learning_rate=0.01)


@pytest.mark.parametrize("value", [-1, -10, 2.5, "3", True, None, float("nan")])
def test_a_bad_early_stopping_is_refused(basin, value):
    with pytest.raises(ValueError, match="early_stopping"):
        _quick(basin, early_stopping=value)


def test_early_stopping_with_sbs_is_not_ignored(basin):
    with pytest.raises(ValueError, match="early_stopping.*sbs"):
        _quick(basin, mapping="uniform", optimizer="sbs", early_stopping=3)


@pytest.mark.parametrize("argument, value", [("maxiter", 2.5), ("maxiter", "10"), ("maxiter", -1), ("maxiter", True),
                                             ("checkpoint_every", 0), ("checkpoint_every", -2), ("checkpoint_every", 1.5)])
def test_iteration_counts_are_whole_numbers(basin, argument, value):
    with pytest.raises(ValueError, match=argument):
        _quick(basin, **{argument: value})


@pytest.mark.parametrize("argument", ["initial_parameters", "initial_states", "bounds", "cost_options"])
@pytest.mark.parametrize("value", [["cp", 200.0], [("cp", 200.0)], "cp", 3.0])
def test_a_list_where_a_dict_is_meant_is_named(basin, argument, value):
    with pytest.raises(ValueError, match=f"{argument}.*(dict|mapping)"):
        _quick(basin, **{argument: value})


@pytest.mark.parametrize("value", [["cp", 200.0], [("cp", 200.0)], ("cp",), 200.0])
def test_simulate_wants_a_dict_of_parameters(basin, value):
    with pytest.raises(ValueError, match="parameters.*(dict|mapping)"):
        hh.simulate(basin, "gr4-lr", value)
    with pytest.raises(ValueError, match="initial states.*(dict|mapping)"):
        hh.prepare_run(basin, "gr4-lr", initial_states=value)


def test_one_parameter_name_as_a_string_is_one_name(basin):
    result = _quick(basin, mapping="uniform", optimizer="lbfgsb", maxiter=0, parameters="cp")
    assert list(result.history.index) == [0]
    assert result.controls["mapping"]["values"].shape == (1,)  # one control: cp, not 'c' and 'p'
    with pytest.raises(ValueError, match="unknown parameter"):
        _quick(basin, parameters="x4")


def _grid(basin, values):
    return xr.DataArray(values, dims=("y", "x"), coords={"y": basin["y"].values, "x": basin["x"].values})


def test_a_dataarray_is_read_by_its_coordinates_not_its_position(basin):
    cp = _grid(basin, 150.0 + np.arange(36.0).reshape(6, 6) * 5)
    reference = hh.simulate(basin, "gr4-lr", {"cp": cp.values})["q"].values
    flipped = cp.isel(y=slice(None, None, -1))  # same labels, rows in the other order
    transposed = cp.transpose("x", "y").isel(x=slice(None, None, -1))
    for grid in (flipped, transposed):
        np.testing.assert_array_equal(hh.simulate(basin, "gr4-lr", {"cp": grid})["q"].values, reference)


@pytest.mark.parametrize("shift", [("x", 1e5), ("y", -1e5), ("x", 500.0)])
def test_a_dataarray_on_another_grid_is_refused_by_name(basin, shift):
    dim, delta = shift
    cp = _grid(basin, np.full((6, 6), 250.0))
    foreign = cp.assign_coords({dim: cp[dim].values + delta})
    with pytest.raises(ValueError, match=f"'cp'.*{dim}"):
        hh.simulate(basin, "gr4-lr", {"cp": foreign})
    with pytest.raises(ValueError, match=f"'hp'.*{dim}"):
        hh.prepare_run(basin, "gr4-lr", initial_states={"hp": foreign / 1000.0})


def test_a_dataarray_without_coordinates_is_read_by_position(basin):
    cp = xr.DataArray(np.full((6, 6), 250.0), dims=("y", "x"))
    q = hh.simulate(basin, "gr4-lr", {"cp": cp})["q"].values
    np.testing.assert_array_equal(q, hh.simulate(basin, "gr4-lr", {"cp": 250.0})["q"].values)


def test_options_that_do_not_apply_are_not_silently_dropped(basin):
    with pytest.raises(ValueError, match="train_nn.*gr4"):
        _quick(basin, train_nn=True)
    with pytest.raises(ValueError, match="train_nn"):
        _quick(basin, train_nn="yes")
    # sbs is gradient-free: the network stays fixed, and an explicit train_nn=True says so (a warning,
    # since the comparison protocol trains hybrids with whatever optimiser the mapping defaults to)
    with pytest.warns(UserWarning, match="train_nn.*sbs"):
        calibrate(basin, "gr4_mlp-lr", "uniform", "sbs", 0, train_nn=True, progress=False)
    with pytest.warns(UserWarning, match="hidden.*distributed"):
        _quick(basin, optimizer="lbfgsb", maxiter=0, hidden=[8])


# ============================================================================ class 3: undefined metrics


@FAST
@given(value=st.floats(0.0, 1e4), n=st.integers(1, 40), name=st.sampled_from(["nse", "nnse", "kge"]))
def test_scores_of_constant_observations_are_nan_not_perfect(value, n, name):
    qo = np.full(n, value, np.float32)
    qs = np.linspace(0.5, 3.0, n).astype(np.float32)
    assert np.isnan(float(cost.metric(name, qo, qs)))
    assert np.isnan(float(jax.jit(cost.METRICS[name])(qo[:, None], qs[:, None], qo[:, None] >= 0)[0]))


def test_kge_of_a_perfect_constant_fit_is_not_one():
    qo = np.full(20, 3.0)
    assert np.isnan(float(cost.metric("kge", qo, qo)))
    assert np.isnan(float(cost.metric("kge", np.zeros(20), np.linspace(0, 1, 20))))


@pytest.mark.parametrize("name", ["mape", "lgrm"])
def test_scores_that_skip_zero_observations_are_nan_on_all_zero(name):
    assert np.isnan(float(cost.metric(name, np.zeros(20), np.linspace(0.1, 1, 20))))


def test_metric_kernels_stay_jittable_with_finite_gradients():
    rng = np.random.default_rng(0)
    qo = jnp.asarray(rng.gamma(2.0, 1.0, (30, 2)), jnp.float32)
    qs = jnp.asarray(rng.gamma(2.0, 1.0, (30, 2)), jnp.float32)
    for name in ("nse", "kge", "rmse"):
        f = jax.jit(jax.grad(lambda s: cost.observation_cost(s, qo, name)))
        assert bool(jnp.all(jnp.isfinite(f(qs)))), name
    flat = jnp.ones_like(qs)  # a constant simulation: KGE's r is 0 by convention, gradient finite
    assert bool(jnp.all(jnp.isfinite(jax.grad(lambda s: cost.observation_cost(s, qo, "kge"))(flat))))


@pytest.mark.parametrize("components", ["nse", "kge", ("mae", "nnse")])
def test_observation_cost_refuses_constant_observations_eagerly(components):
    qo = np.full((24, 2), 1.5, np.float32)
    qo[:, 1] = np.linspace(1, 2, 24)
    with pytest.raises(ValueError, match=r"gauge\(s\) \[0\].*constant"):
        cost.observation_cost(np.ones((24, 2), np.float32), qo, components)


def test_evaluate_constant_observations_gives_nan_and_says_why(simulation, constant):
    with pytest.warns(UserWarning, match=r"(?s)(nse|kge).*SYN000.*constant"):
        table = hh.evaluate(simulation, constant, ("nse", "kge", "mae"))
    assert np.isnan(table["nse"].values).all() and np.isnan(table["kge"].values).all()
    assert np.isfinite(table["mae"].values).all()


def test_evaluate_on_one_step_gives_nan_and_says_why(simulation, basin):
    t = basin["time"].values
    with pytest.warns(UserWarning, match="one observation|constant"):
        table = hh.evaluate(simulation, basin, ("nse", "kge"), period=(t[9], t[10]))
    assert np.isnan(table["nse"].values).all() and np.isnan(table["kge"].values).all()


def test_a_one_step_basin_simulates_and_evaluates():
    one = hh.synthetic_basin(nrow=6, ncol=6, ntime=1, seed=0)
    sim = hh.simulate(one, "gr4-lr")
    with pytest.warns(UserWarning, match="one observation|constant"):
        table = hh.evaluate(sim, one, ("nse", "kge"))
    assert np.isnan(table["kge"].values).all()
    with pytest.raises(ValueError, match="constant|one observation"):
        calibrate(one, "gr4-lr", "distributed", "lbfgsb", 1, progress=False)


def test_evaluate_all_zero_observations(simulation, basin):
    b = basin.copy(deep=True)
    b["qobs"][:] = 0.0
    with pytest.warns(UserWarning, match="zero"):
        table = hh.evaluate(simulation, b, ("nse", "kge", "mape", "lgrm", "rmse"))
    for name in ("nse", "kge", "mape", "lgrm"):
        assert np.isnan(table[name].values).all(), name
    assert np.isfinite(table["rmse"].values).all()


@pytest.mark.parametrize("optimizer, mapping", [("adam", "distributed"), ("lbfgsb", "distributed"), ("sbs", "uniform")])
@pytest.mark.parametrize("component", ["nse", "kge"])
def test_calibrate_refuses_constant_observations_before_optimising(constant, optimizer, mapping, component):
    with pytest.raises(ValueError, match=rf"(?s)SYN00.*constant.*{component}"):
        calibrate(constant, "gr4-lr", mapping, optimizer, 2, cost=component, gauges="all", progress=False)


def test_calibrate_names_the_window_gauge_and_component(basin):
    b = basin.copy(deep=True)
    b["qobs"][1, 20:30] = 0.0  # SYN001 is zero in the validation window only
    t = b["time"].values
    with pytest.raises(ValueError, match=r"(?s)validation.*SYN001.*(zero|constant)"):
        calibrate(b, "gr4-lr", "distributed", "lbfgsb", 1, gauges="all", validation_period=(t[19], t[29]),
                  progress=False)
    with pytest.raises(ValueError, match=r"(?s)SYN00.*zero.*mape"):
        z = basin.copy(deep=True)
        z["qobs"][:] = 0.0
        calibrate(z, "gr4-lr", "distributed", "lbfgsb", 1, cost="mape", gauges="all", progress=False)


def test_calibrate_on_a_one_step_period_is_an_error(basin):
    t = basin["time"].values
    with pytest.raises(ValueError, match="one observation|constant"):
        calibrate(basin, "gr4-lr", "distributed", "lbfgsb", 2, period=(t[9], t[10]), progress=False)


def test_a_cost_that_turns_nan_keeps_a_history_and_the_best_controls():
    from hybridhydro.calibration.optimizers import Runner

    runner = object.__new__(Runner)
    runner.validating, runner.early_stopping, runner.rows = False, 0, []
    for it, j in enumerate([np.nan, np.nan]):
        runner.rows.append({"iteration": it, "cost": j})
    assert runner.monitor()[0] == 0  # all NaN: no "All-NaN slice" crash


def test_water_balance_of_a_dry_period_has_no_infinite_share(basin):
    dry = basin.copy(deep=True)
    dry["prcp"][:] = 0.0
    sim = hh.simulate(dry, "gr4-lr", return_fluxes=True, return_states=True, return_discharge_field=True)
    with pytest.warns(UserWarning, match="rain"):
        balance = hh.water_balance(sim, dry)
    assert not np.isinf(balance["relative_residual"].values).any()
    assert np.isnan(balance["relative_residual"].values).all()
    assert np.isfinite(balance["residual"].values).all()
    closure = hh.balance_closure(balance, sim)
    assert all(not (isinstance(v, float) and math.isinf(v)) for v in closure.values()), closure


# ============================================================================ class 6: network and optimiser settings


@pytest.mark.parametrize("hidden", [[0], [-3], [16, 0], [2.5], ["16"], 0, 16, "16", [True]])
def test_bad_hidden_sizes_are_named(basin, hidden):
    with pytest.raises(ValueError, match="hidden"):
        _quick(basin, mapping="ann", hidden=hidden)


@FAST
@given(hidden=st.lists(st.integers(-50, 0), min_size=1, max_size=3))
def test_no_network_constructor_takes_a_non_positive_width(hidden):
    for make in (lambda: DescriptorMLP(2, [(0.0, 1.0)], hidden),
                 lambda: DescriptorCNN(2, [(0.0, 1.0)], hidden),
                 lambda: FluxCorrectionNet(4, 2, hidden[:2])):
        with pytest.raises(ValueError, match="hidden|channels"):
            make()


@pytest.mark.parametrize("make, match", [
    (lambda: DescriptorMLP(0, [(0.0, 1.0)]), "n_descriptors"),
    (lambda: DescriptorMLP(2, []), "bounds"),
    (lambda: DescriptorCNN(2, [(0.0, 1.0)], kernel=0), "kernel"),
    (lambda: DescriptorCNN(2, [(0.0, 1.0)], seed=1.5), "seed"),
    (lambda: DescriptorMLP(2, [(0.0, 1.0)], seed="a"), "seed"),
    (lambda: FluxCorrectionNet(4, 2, seed=0.5), "seed"),
    (lambda: FluxCorrectionNet(0, 2), "n_in"),
])
def test_network_constructors_name_the_argument(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@FAST
@given(seed=st.one_of(st.floats(allow_nan=True).filter(lambda x: not float(x).is_integer()), st.text(max_size=3),
                      st.just(None), st.booleans()))
def test_a_seed_is_an_integer(basin, seed):
    with pytest.raises(ValueError, match="seed"):
        _quick(basin, mapping="ann", seed=seed)
    with pytest.raises(ValueError, match="seed"):
        hh.make_mapping("ann", ("cp",), basin, seed=seed)


@pytest.mark.parametrize("argument", ["gauges", "validation_gauges"])
@pytest.mark.parametrize("value", [[], (), ["SYN000", "SYN000"], [None], 3.5])
def test_gauge_lists_are_checked(basin, argument, value):
    with pytest.raises(ValueError, match=named(argument)):
        _quick(basin, **{argument: value})


@pytest.mark.parametrize("options, match", [
    ({"wamrup_steps": 3}, "wamrup_steps.*warmup_steps"),
    ({"gauges": [0]}, "gauges"),
    ({"warmup_steps": -1}, "warmup_steps"),
    ({"warmup_steps": 2.5}, "warmup_steps"),
    ({"transforms": "log"}, "transform"),
    ({"gauge_weights": [1.0, 2.0]}, "gauge_weights"),
])
def test_cost_options_are_checked_by_key(basin, options, match):
    with pytest.raises(ValueError, match=match):
        _quick(basin, cost_options=options)


BAD_DATES = st.one_of(
    st.text(alphabet="0123456789-:T xyz", min_size=1, max_size=12).filter(lambda s: not _parses(s)),
    st.integers(), st.floats(), st.booleans(), st.just(""),
)


def _parses(text):
    import pandas as pd

    try:
        return not pd.isna(pd.Timestamp(text))
    except (ValueError, TypeError, OverflowError):
        return False


@FAST
@given(bad=BAD_DATES, side=st.sampled_from([0, 1]))
def test_an_unparseable_period_names_the_argument(basin, simulation, bad, side):
    period = [None, None]
    period[side] = bad
    with pytest.raises(ValueError, match=named("period")):
        _quick(basin, period=tuple(period))
    with pytest.raises(ValueError, match=named("validation_period")):
        _quick(basin, validation_period=tuple(period))
    with pytest.raises(ValueError, match=named("period")):
        hh.evaluate(simulation, basin, "nse", period=tuple(period))


@pytest.mark.parametrize("period", [5, "2020-01-01", ("2020-01-02",), ("2020-01-01", "2020-01-02", "2020-01-03"),
                                    {"start": "2020-01-01"}, (float("nan"), None), ("NaT", None)])
def test_a_period_that_is_not_a_pair_of_dates_is_named(basin, period):
    with pytest.raises(ValueError, match=named("period")):
        _quick(basin, period=period)


def test_a_one_step_period_is_read_on_a_one_step_basin():
    one = hh.synthetic_basin(nrow=6, ncol=6, ntime=1, seed=0)
    t = one["time"].values
    assert hh.periods.period_mask(t, (None, t[0])).all()


def test_evaluate_checks_its_other_arguments(simulation, basin):
    with pytest.raises(ValueError, match="metrics"):
        hh.evaluate(simulation, basin, [])
    with pytest.raises(ValueError, match="'q'"):
        hh.evaluate(simulation.drop_vars("q"), basin)


def test_water_balance_checks_its_result(basin, simulation):
    bare = simulation.copy()
    bare.attrs = {}
    with pytest.raises(ValueError, match="structure"):
        hh.water_balance(bare, basin)
    with pytest.raises(ValueError, match="result"):
        hh.water_balance(basin["qobs"], basin)


# ----------------------------------------------------------------------------- the params schema


@pytest.mark.parametrize("section, match", [
    ({"hybrid": {"hidden": [0]}}, "hybrid.hidden"),
    ({"hybrid": {"hidden": [-2]}}, "hybrid.hidden"),
    ({"hybrid": {"hidden": [True]}}, "hybrid.hidden"),
    ({"hybrid": {"seed": True}}, "hybrid.seed"),
    ({"calibration": {"optimizers": {"ann": {"learning_rate": float("inf")}}}}, "learning_rate"),
    ({"calibration": {"optimizers": {"ann": {"maxiter": True}}}}, "maxiter"),
    ({"calibration": {"optimizers": {"ann": {"maxiter": 2.5}}}}, "maxiter"),
    ({"calibration": {"calibration_period": ["2020-02-01", "2020-01-01"]}}, "calibration_period"),
    ({"calibration": {"validation_period": ["2020-02-01", "2020-02-01"]}}, "validation_period"),
])
def test_the_schema_refuses_what_calibrate_refuses(section, match):
    with pytest.raises(ParamsError, match=match):
        load_params({"case": "x", **section})


# ============================================================================ class 7: progress bars and warnings


def _imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.append(node.module)
        elif isinstance(node, ast.Import):
            found += [a.name for a in node.names]
    return found


def test_no_module_imports_tqdm_auto():
    """In a Jupyter kernel without ipywidgets, importing tqdm.auto prints a TqdmWarning into every notebook."""
    offenders = [str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
                 if any(m in ("tqdm.auto", "tqdm.autonotebook", "tqdm.notebook") for m in _imports(p))]
    assert not offenders, offenders


def test_the_progress_switch_silences_calibrate(basin, monkeypatch, capfd):
    monkeypatch.setenv("HYBRIDHYDRO_PROGRESS", "0")
    capfd.readouterr()
    calibrate(basin, "gr4-lr", "uniform", "sbs", 1, parameters=("cp",))  # progress=True by default
    assert "calibrate (sbs)" not in capfd.readouterr().err
    monkeypatch.setenv("HYBRIDHYDRO_PROGRESS", "1")
    calibrate(basin, "gr4-lr", "uniform", "sbs", 1, parameters=("cp",))
    assert "calibrate (sbs)" in capfd.readouterr().err


def test_the_progress_switch_silences_the_readers(monkeypatch, capfd):
    pytest.importorskip("smash")
    monkeypatch.setenv("HYBRIDHYDRO_PROGRESS", "off")
    capfd.readouterr()
    hh.read_smash_dataset("Cance", "2014-09-15 00:00", "2014-09-15 06:00")  # progress=True by default
    assert "%|" not in capfd.readouterr().err


STAGE = '''\
# %% tags=["parameters"]
output_dir = "out"

# %%
import hybridhydro as hh
basin = hh.synthetic_basin(nrow=5, ncol=5, ntime=24, seed=0)
result = hh.calibrate(basin, "gr4-lr", "uniform", "sbs", 2, parameters=("cp",))
print("calibrated", len(result.history))
'''


@pytest.mark.parametrize("progress", [False, True])
def test_executed_notebooks_hold_no_progress_lines_or_tqdm_warnings(tmp_path, progress):
    case = tmp_path / "tiny.yaml"
    case.write_text(yaml.safe_dump({"extends": None, "case": "tiny"}))
    folder = tmp_path / "nb"
    folder.mkdir()
    (folder / "01_quiet.py").write_text(textwrap.dedent(STAGE))
    run(load_params(case), notebooks_dir=folder, output_root=tmp_path / "runs", progress=progress)
    nb = nbformat.read(tmp_path / "runs" / "tiny" / "01_quiet.ipynb", as_version=4)
    streams = [o for cell in nb.cells for o in cell.get("outputs", []) if o.get("output_type") == "stream"]
    stderr = "".join(o["text"] for o in streams if o["name"] == "stderr")
    assert "calibrated" in "".join(o["text"] for o in streams if o["name"] == "stdout")
    assert "%|" not in stderr and "\r" not in stderr, stderr[:500]
    assert "TqdmWarning" not in stderr and "IProgress" not in stderr, stderr[:500]


def test_warnings_in_this_module_are_user_warnings(simulation, constant):
    """What a user can act on comes as a UserWarning with the gauge in it, not a RuntimeWarning from numpy."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        hh.evaluate(simulation, constant, ("nse",))
    assert caught and all(issubclass(w.category, UserWarning) and not issubclass(w.category, RuntimeWarning)
                          for w in caught), [str(w.message) for w in caught]


def test_surprising_but_defined_scores_carry_a_warning(simulation, basin):
    """MAPE skips zero observations and KGE takes r = 0 on a constant simulation: defined, documented, warned."""
    b = basin.copy(deep=True)
    b["qobs"][:, :5] = 0.0
    with pytest.warns(UserWarning, match="mape skips zero observations"):
        table = hh.evaluate(simulation, b, ("mape",))
    assert np.isfinite(table["mape"].values).all()
    flat = simulation.copy(deep=True)
    flat["q"][:] = 1.0
    with pytest.warns(UserWarning, match="simulation is constant.*r as 0"):
        table = hh.evaluate(flat, basin, ("kge",))
    assert np.isfinite(table["kge"].values).all()

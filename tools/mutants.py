#!/usr/bin/env python3
"""Hand-made mutation testing of hybridhydro: would the test suite notice a small, realistic bug?

Each mutant below is one edit of the library's source (a sign error, a wrong constant, an
off-by-one, a dropped term, a reversed comparison, a wrong unit factor), with the few fast tests
that should catch it. For every mutant the script

1. copies the working tree (the files git tracks or would track: ``git ls-files -co
   --exclude-standard``) into a scratch folder, once;
2. applies the mutant to the copy only (never to the repository), checks that ``import
   hybridhydro`` resolves to the copy (``PYTHONPATH`` first, before the venv's editable install),
3. runs ``python -m pytest -x -q -p no:cacheprovider -m "not slow" <selection>`` there, with a
   timeout (a timeout counts as caught, and is reported as such),
4. restores the file.

Before the mutants it runs every selected test once on the unmutated copy: a test that fails
there cannot judge a mutant, and the mutants that rely on it are reported as "BROKEN". Then it
prints a table (id, module, description, caught / SURVIVED, seconds, the first failing test) and
the share caught, and writes it to ``docs/mutation.md`` (full runs only; ``--only`` runs print).

It is slow (about a quarter of an hour for the whole set on two cores) and is not part of ``make test``:
run it with ``make mutants`` or ``python tools/mutants.py [--only ID,ID] [--list] [--jobs N]``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "mutation.md"
TIMEOUT_S = 300
BASELINE_TIMEOUT_S = 1800


@dataclass(frozen=True)
class Mutant:
    id: str
    file: str  # relative to the repository root
    original: str  # must occur exactly once in the file
    mutated: str
    description: str
    tests: tuple[str, ...]  # pytest selection: files or node ids, fast ones

    @property
    def module(self) -> str:
        return self.file.removeprefix("hybridhydro/").removesuffix(".py")


M = Mutant
MUTANTS: list[Mutant] = [
    # ------------------------------------------------------------------ balance.py
    M(
        "balance-pet-mask", "hybridhydro/balance.py",
        "valid = (prcp >= 0.0) & (pet >= 0.0)  # NaN compares False",
        "valid = prcp >= 0.0  # NaN compares False",
        "forcing mask ignores missing PET: rain of a cell-step without PET is counted",
        ("tests/test_balance.py::test_missing_pet_takes_in_no_rain",),
    ),
    M(
        "balance-tolerance", "hybridhydro/balance.py",
        "return bool(np.isfinite(worst) and worst <= tolerance)",
        "return bool(np.isfinite(worst) and worst <= 100 * tolerance)",
        "closure check 100x too lenient",
        ("tests/test_balance.py::test_a_leak_shows_in_the_residual",
         "tests/test_ode_trust.py::test_smash_rules_that_create_water_are_named",
         "tests/test_ode_trust.py::test_named_solver_losses_never_excuse_a_residual",
         "tests/test_mutants.py::test_a_hidden_loss_ten_times_the_tolerance_fails_the_closure_check"),
    ),
    M(
        "balance-gr6-exchange", "hybridhydro/balance.py",
        'return 2.0 * flux("lexc") + flux("qd") - flux("prd")',
        'return flux("lexc") + flux("qd") - flux("prd")',
        "gr6 exchange counted once, not in both the transfer and exponential stores",
        ("tests/test_balance.py::test_balance_closes[gr6-lag0]",),
    ),
    # ------------------------------------------------------------------ structures/_gr.py
    M(
        "gr-split-swap", "hybridhydro/structures/_gr.py",
        "return 0.9 * runoff + lexc, 0.1 * runoff",
        "return 0.1 * runoff + lexc, 0.9 * runoff",
        "routed/direct split swapped (10 % routed, 90 % direct)",
        ("tests/test_structures_smash.py::test_missing_forcing_and_imperviousness_match_smash[gr4]",),
    ),
    M(
        "gr6-exchange-exponential", "hybridhydro/structures/_gr.py",
        "pre = to_exponential + lexc",
        "pre = to_exponential",
        "gr6: the exchange no longer reaches the exponential store",
        ("tests/test_structures.py::test_structure_exchange_is_the_only_source[gr6]",
         "tests/test_balance.py::test_balance_closes[gr6-lag0]"),
    ),
    M(
        "gr4-direct-floor", "hybridhydro/structures/_gr.py",
        "qd = jnp.maximum(0.0, prd + lexc)\n    fluxes = dict(**fx, lexc=lexc, prr=prr, prd=prd, qr=qr, qd=qd, qt=qr + qd,",
        "qd = prd + lexc\n    fluxes = dict(**fx, lexc=lexc, prr=prr, prd=prd, qr=qr, qd=qd, qt=qr + qd,",
        "gr4/gr5: direct branch not floored at 0 (a losing exchange drives it negative)",
        ("tests/test_structures.py::test_losing_exchange_removes_at_most_its_potential",
         "tests/test_structures_smash.py::test_missing_forcing_and_imperviousness_match_smash[gr4]"),
    ),
    # ------------------------------------------------------------------ structures/_operators.py
    M(
        "op-infiltration-hp", "hybridhydro/structures/_operators.py",
        "ps = cp * (1.0 - hp**2) * tp / (1.0 + hp * tp)",
        "ps = cp * (1.0 - hp) * tp / (1.0 + hp * tp)",
        "production store infiltration with (1 - hp) instead of (1 - hp^2)",
        ("tests/test_structures_smash.py::test_missing_forcing_and_imperviousness_match_smash[gr4]",),
    ),
    M(
        "op-percolation-dt", "hybridhydro/structures/_operators.py",
        "return 2.25 * (86400.0 / dt) ** 0.25",
        "return 2.25 * (dt / 86400.0) ** 0.25",
        "percolation constant with the time-step ratio inverted (right at daily steps only)",
        ("tests/test_structures_smash.py::test_missing_forcing_and_imperviousness_match_smash[gr4]",),
    ),
    M(
        "op-exchange-exponent", "hybridhydro/structures/_operators.py",
        "return (1.0 + fl) * kexc * ht**3.5",
        "return (1.0 + fl) * kexc * ht**2.5",
        "GR4 exchange with ht^2.5 instead of ht^3.5",
        ("tests/test_structures_smash.py::test_missing_forcing_and_imperviousness_match_smash[gr4]",),
    ),
    # ------------------------------------------------------------------ structures/_interception.py
    M(
        "interception-day-start", "hybridhydro/structures/_interception.py",
        'days = np.asarray(times, dtype="datetime64[ns]").astype("datetime64[D]")',
        'days = (np.asarray(times, dtype="datetime64[ns]") - np.timedelta64(1, "s")).astype("datetime64[D]")',
        "automatic ci groups steps by their start, not their end (midnight step in the wrong day)",
        ("tests/test_structures.py::test_adjust_interception_matches_loop_and_groups_by_step_end",
         "tests/test_mutants.py::test_automatic_interception_groups_steps_by_the_day_of_their_end"),
    ),
    # ------------------------------------------------------------------ structures/_snow.py
    M(
        "snow-melt-cap", "hybridhydro/structures/_snow.py",
        'mlt = jnp.where(ok, jnp.minimum(pack, jnp.maximum(0.0, theta["kmlt"] * temp)), 0.0)',
        'mlt = jnp.where(ok, jnp.maximum(0.0, theta["kmlt"] * temp), 0.0)',
        "snow melt not capped by the pack (the pack goes negative)",
        ("tests/test_structures.py::test_snow_conserves_mass",
         "tests/test_structures_smash.py::test_snow_module_matches_smash"),
    ),
    # ------------------------------------------------------------------ structures/_mlp.py
    M(
        "mlp-silu-slope", "hybridhydro/structures/_mlp.py",
        "slope = sig * (1.0 + pre * (1.0 - sig))",
        "slope = sig",
        "SiLU derivative of the one-pass network tangents loses its second term",
        ("tests/test_ode_trust.py::test_network_derivatives_in_one_pass_equal_forward_mode",),
    ),
    # ------------------------------------------------------------------ structures/_ode.py
    M(
        "ode-qt-exchange", "hybridhydro/structures/_ode.py",
        'return rates["outflow"] + 0.1 * rates["runoff"] + rates["exchange"], rates["exchange"]',
        'return rates["outflow"] + 0.1 * rates["runoff"], rates["exchange"]',
        "gr4_ode discharge drops the exchange term",
        ("tests/test_balance.py::test_balance_closes[gr4_ode-lag0]",),
    ),
    M(
        "ode-overflow-unit", "hybridhydro/structures/_ode.py",
        "overflow = jnp.where(exists, 0.0, ct * (c - g1))",
        "overflow = jnp.where(exists, 0.0, c - g1)",
        "conservative solver's overflow left dimensionless (missing the capacity ct, mm)",
        ("tests/test_ode_trust.py::test_storms_close_with_every_loss_named[conservative-150.0]",
         "tests/test_ode_trust.py::test_storms_close_with_every_loss_named[conservative-1000.0]"),
    ),
    # ------------------------------------------------------------------ routing.py
    M(
        "routing-llr-minutes", "hybridhydro/routing.py",
        'seg["decay"] = jnp.exp(-dt / (60.0 * seg["llr"]))',
        'seg["decay"] = jnp.exp(-dt / seg["llr"])',
        "lr reservoir constant llr read in seconds instead of minutes",
        ("tests/test_routing.py::test_matches_cell_by_cell_reference[lr]",
         "tests/test_simulate.py::test_matches_smash_forward_run_on_cance[gr4-lr]"),
    ),
    M(
        "routing-kw-half", "hybridhydro/routing.py",
        'qc = (d1 * qup + d2 * qm + d1 * (qlm + ql) * 0.5) / (d1 + d2)',
        'qc = (d1 * qup + d2 * qm + d1 * (qlm + ql)) / (d1 + d2)',
        "kw lateral inflow not averaged over the two time levels",
        ("tests/test_routing.py::test_kw_sanity_positive_and_steady_state_is_lag0",
         "tests/test_routing.py::test_matches_cell_by_cell_reference[kw]"),
    ),
    M(
        "routing-lag0-first-upstream", "hybridhydro/routing.py",
        'return _scatter(q, c, _gather(qt, c, 0.0) + _gather(q, x["ups"], 0.0).sum(-1))',
        'return _scatter(q, c, _gather(qt, c, 0.0) + _gather(q, x["ups"][..., 0], 0.0))',
        "lag0 takes only the first upstream neighbour's discharge",
        ("tests/test_routing.py::test_lag0_outlet_receives_all_runoff_at_each_step",),
    ),
    M(
        "routing-adjoint-k1", "hybridhydro/routing.py",
        '"k1": dt / (1e-3 * g["upstream_area"]).astype(dtype),',
        '"k1": dt / g["upstream_area"].astype(dtype),',
        "lr hand-written adjoint: inflow depth factor misses the mm/m conversion",
        ("tests/test_routing.py::test_lr_adjoint_matches_autodiff_in_float32",),
    ),
    # ------------------------------------------------------------------ mesh/*
    M(
        "mesh-flwdst-diagonal", "hybridhydro/mesh/_build.py",
        "np.where((kk == 3) | (kk == 7), dxf[d], np.sqrt(dxf[d] * dxf[d] + dyf[d] * dyf[d])),",
        "np.where((kk == 3) | (kk == 7), dxf[d], dxf[d] + dyf[d]),",
        "flow distance of a diagonal step dx + dy instead of sqrt(dx^2 + dy^2)",
        ("tests/test_mesh.py::test_random_grids_match_generate_mesh",
         "tests/test_mesh.py::test_real_catchments_match_generate_mesh"),
    ),
    M(
        "mesh-sink-axes", "hybridhydro/mesh/_d8.py",
        "for k in (1, 2, 3, 4):  # N-S, NE-SW, E-W, SE-NW",
        "for k in (1, 3, 4):  # N-S, NE-SW, E-W, SE-NW",
        "sink pairs on the NE-SW axis not detected (smash's own omission)",
        ("tests/test_mesh.py::test_detect_sink_checks_all_four_axes",
         "tests/test_mesh_validation.py::test_two_cells_pointing_at_each_other_on_every_axis"),
    ),
    M(
        "mesh-catchment-mean-count", "hybridhydro/mesh/_upstream.py",
        "out[g] = np.where(count > 0, total / count, np.nan)",
        "out[g] = np.where(count > 0, total / np.float32(sub.shape[1]), np.nan)",
        "catchment mean divides by every cell, NaN cells included",
        ("tests/test_io.py::test_basin_means_ignore_nan",),
    ),
    M(
        "mesh-cscpar-offset", "hybridhydro/mesh/_mesh.py",
        "return (np.cumsum(ncpar) - ncpar).astype(np.int32)",
        "return np.cumsum(ncpar).astype(np.int32)",
        "cscpar starts at the end of each partition, not its start (off by one partition)",
        ("tests/test_mesh.py::test_real_catchments_match_generate_mesh",
         "tests/test_mesh.py::test_random_grids_match_generate_mesh"),
    ),
    # ------------------------------------------------------------------ model.py
    M(
        "model-qt-hourly", "hybridhydro/model.py",
        'qt = fluxes["qt"] * 1e-3 * cell_area / dt',
        'qt = fluxes["qt"] * 1e-3 * cell_area / 3600.0',
        "runoff mm -> m3/s with an hourly step hard-coded (right at dt = 3600 s only)",
        ("tests/test_balance.py::test_balance_closes[gr4-lag0]",
         "tests/test_simulate.py::test_result_dataset",
         "tests/test_mutants.py::test_a_daily_run_closes_its_water_balance"),
    ),
    M(
        "model-feasible-closed", "hybridhydro/model.py",
        "bad = np.flatnonzero(~((cells > lo) & (cells < hi)))  # NaN fails too",
        "bad = np.flatnonzero(~((cells >= lo) & (cells <= hi)))  # NaN fails too",
        "feasible domain checked as a closed interval (cp = 0 accepted)",
        ("tests/test_simulate.py::test_values_outside_the_feasible_domain_name_the_cell",),
    ),
    M(
        "model-run-ignores-replacements", "hybridhydro/model.py",
        "out[name] = jnp.broadcast_to(jnp.asarray(value), jnp.shape(current[name]))",
        "out[name] = current[name]",
        "run(inputs, parameters) keeps the prepared parameters (a user's loss has no gradient)",
        ("tests/test_run.py::test_simulate_is_prepare_then_run",),
    ),
    M(
        "model-period-ignored", "hybridhydro/model.py",
        "forcing = {k: v[k0 : k1 + 1] for k, v in forcing.items()}",
        "forcing = {k: v for k, v in forcing.items()}",
        "prepare_run(period=...) runs the whole basin instead of the window",
        ("tests/test_run.py::test_a_period_runs_a_window_with_its_own_initial_states",),
    ),
    M(
        "calib-bounds-unchecked", "hybridhydro/calibration/__init__.py",
        "if not (f_lo < lo and hi < f_hi):",
        "if not (f_lo <= lo or hi <= f_hi):",
        "calibration bounds outside the feasible domain accepted",
        ("tests/test_run.py::test_bounds_outside_the_feasible_domain_are_refused_with_the_parameter_named",),
    ),
    M(
        "calib-regularisation-dropped", "hybridhydro/calibration/problem.py",
        'j = j + reg["wjreg"] * regularisation_cost(',
        'j = j + 0.0 * regularisation_cost(',
        "the regularisation term is computed but not added to the cost",
        ("tests/test_run.py::test_regularisation_is_wired_into_calibrate",),
    ),
    # ------------------------------------------------------------------ cost/
    M(
        "cost-kge-constant-perfect", "hybridhydro/cost/metrics.py",
        "return _empty_to_nan(n, jnp.where(defined, value, jnp.nan))",
        "return _empty_to_nan(n, value)",
        "KGE on constant observations takes the undefined alpha and beta as 1 (a near-perfect score)",
        ("tests/test_edges_arguments.py::test_kge_of_a_perfect_constant_fit_is_not_one",),
    ),
    M(
        "cost-kge-bias-term", "hybridhydro/cost/metrics.py",
        "value = 1.0 - _sqrt((r - 1.0) ** 2 + (a - 1.0) ** 2 + (b - 1.0) ** 2)",
        "value = 1.0 - _sqrt((r - 1.0) ** 2 + (a - 1.0) ** 2)",
        "KGE drops its bias term (beta - 1)^2",
        ("tests/test_cost.py::test_metric_matches_numpy_reference_with_gaps[kge]",),
    ),
    M(
        "cost-warmup-off-by-one", "hybridhydro/cost/components.py",
        "qs2, qo2, valid = qs2[warmup_steps:], qo2[warmup_steps:], valid[warmup_steps:]",
        "qs2, qo2, valid = qs2[warmup_steps + 1:], qo2[warmup_steps + 1:], valid[warmup_steps + 1:]",
        "warm-up drops one step too many",
        ("tests/test_cost.py::test_warmup_and_transforms",),
    ),
    M(
        "cost-quartiles-swapped", "hybridhydro/cost/components.py",
        'QUANTILE_WEIGHTS = {"median": 0.5, "lquartile": 0.25, "uquartile": 0.75}',
        'QUANTILE_WEIGHTS = {"median": 0.5, "lquartile": 0.75, "uquartile": 0.25}',
        "lower and upper quartile gauge weights swapped",
        ("tests/test_cost.py::test_aggregation_weights_and_quantiles",),
    ),
    M(
        "cost-smoothing-neighbour", "hybridhydro/cost/regularisation.py",
        "d_col = neighbour(0, 1) - 2.0 * m + neighbour(0, -1)",
        "d_col = neighbour(0, 1) - 2.0 * m + neighbour(0, 1)",
        "smoothing's column Laplacian uses the east neighbour twice",
        ("tests/test_cost.py::test_smoothing_against_loop",),
    ),
    # ------------------------------------------------------------------ signatures.py
    M(
        "sig-baseflow-filter", "hybridhydro/signatures.py",
        "bi = jnp.where(started, jnp.minimum(xi, a * b_prev + (1 - a) / 2 * (xi + x_prev)), b0)",
        "bi = jnp.where(started, jnp.minimum(xi, a * b_prev + (1 - a) * (xi + x_prev)), b0)",
        "differentiable baseflow filter weights the inflow by (1 - a), not (1 - a)/2",
        ("tests/test_signatures.py::test_numpy_and_jax_agree",),
    ),
    M(
        "sig-lag-time-sign", "hybridhydro/signatures.py",
        '"Elt": float(np.argmax(qv) - np.argmax(pv)),',
        '"Elt": float(np.argmax(pv) - np.argmax(qv)),',
        "event lag time computed rain peak minus flow peak (sign reversed)",
        ("tests/test_signatures.py::test_numpy_and_jax_agree",
         "tests/test_signatures.py::test_signatures_vs_smash"),
    ),
    # ------------------------------------------------------------------ calibration/, periods.py
    M(
        "calib-monitor-training", "hybridhydro/calibration/optimizers.py",
        'key = "validation_cost" if self.validating else "cost"',
        'key = "cost"',
        "early stopping watches the training cost instead of the validation cost",
        ("tests/test_calibrate.py::test_early_stopping_watches_the_validation_cost_and_counts_its_patience",
         "tests/test_calibrate.py::test_early_stopping_on_validation_returns_the_best"),
    ),
    M(
        "calib-patience-off-by-one", "hybridhydro/calibration/optimizers.py",
        'return self.rows[-1]["iteration"] - best > self.early_stopping',
        'return self.rows[-1]["iteration"] - best >= self.early_stopping',
        "early stopping's patience one iteration short (>= instead of >)",
        ("tests/test_calibrate.py::test_early_stopping_watches_the_validation_cost_and_counts_its_patience",),
    ),
    M(
        "calib-adam-bias-correction", "hybridhydro/calibration/optimizers.py",
        "lambda m, v: -learning_rate * (m / (1.0 - b1)) / (jnp.sqrt(v / (1.0 - b2)) + eps), m, v)",
        "lambda m, v: -learning_rate * (m / (1.0 - b1)) / (jnp.sqrt(v) + eps), m, v)",
        "smash's Adam without the second moment's bias correction",
        ("tests/test_calibrate.py::test_smash_update_rules_are_spec_10_4",),
    ),
    M(
        "calib-period-start", "hybridhydro/periods.py",
        "mask &= times > start",
        "mask &= times >= start",
        "calibration period (start, end] read as [start, end]: the step ending at start is costed",
        ("tests/test_calibrate.py::test_bad_input_is_explained",
         "tests/test_mutants.py::test_a_period_is_open_at_its_start_and_closed_at_its_end"),
    ),
    M(
        "calib-dws-gauge", "hybridhydro/periods.py",
        "return int(np.nanargmax(gauge_areas(basin)))",
        "return int(np.nanargmin(gauge_areas(basin)))",
        "'dws' picks the smallest catchment instead of the most downstream gauge",
        ("tests/test_calibrate.py::test_bad_input_is_explained",
         "tests/test_mutants.py::test_dws_calibrates_on_the_most_downstream_gauge"),
    ),
    # ------------------------------------------------------------------ mapping.py
    M(
        "mapping-normalize-span", "hybridhydro/mapping.py",
        "offset[k], scale[k] = lo, hi - lo",
        "offset[k], scale[k] = lo, hi",
        "descriptor normalisation divides by the maximum, not the range",
        ("tests/test_networks.py::test_descriptor_transforms",),
    ),
    M(
        "mapping-multilinear-start", "hybridhydro/mapping.py",
        '"intercept": jnp.asarray(np.log(scaled / (1 - scaled)), jnp.float32),',
        '"intercept": jnp.asarray(np.log(scaled), jnp.float32),',
        "multi-* first intercept log(p) instead of logit(p): the start is not the given mean",
        ("tests/test_networks.py::test_every_mapping_stays_in_bounds_and_has_gradients",),
    ),
    # ------------------------------------------------------------------ networks.py
    M(
        "net-ann-span", "hybridhydro/networks.py",
        "out = jnp.tanh(self.layers[-1](d))\n"
        "        return self.low[...] + (self.high[...] - self.low[...]) * (out + 1.0) / 2.0",
        "out = jnp.tanh(self.layers[-1](d))\n"
        "        return self.low[...] + (self.high[...] + self.low[...]) * (out + 1.0) / 2.0",
        "DescriptorMLP scales its output by high + low instead of high - low",
        ("tests/test_networks.py::test_regionalisation_outputs_span_each_parameters_bounds[ann]",),
    ),
    M(
        "net-cnn-span", "hybridhydro/networks.py",
        "out = jnp.tanh(self.head(z[0]))\n"
        "        return self.low[...] + (self.high[...] - self.low[...]) * (out + 1.0) / 2.0",
        "out = jnp.tanh(self.head(z[0]))\n"
        "        return self.low[...] + (self.high[...] + self.low[...]) * (out + 1.0) / 2.0",
        "DescriptorCNN scales its output by high + low instead of high - low",
        ("tests/test_networks.py::test_regionalisation_outputs_span_each_parameters_bounds[cnn]",),
    ),
    M(
        "net-scale-biases", "hybridhydro/networks.py",
        'value = value * np.float32(scale) if name.startswith("weight") else value',
        'value = value * np.float32(scale) if name.startswith("bias") else value',
        "FluxCorrectionNet's scale applied to the biases instead of the weights",
        ("tests/test_networks.py::test_zero_initialisation_and_scale",),
    ),
    # ------------------------------------------------------------------ protocol.py
    M(
        "protocol-scenario-period", "hybridhydro/protocol.py",
        'period = self.validation_period if name in ("temporal", "spatio-temporal") else self.calibration_period',
        'period = self.validation_period if name in ("temporal", "spatial") else self.calibration_period',
        "scenario table: 'spatial' scored on the validation period, 'spatio-temporal' on calibration",
        ("tests/test_protocol.py::test_default_split_holds_out_the_smallest_gauge",
         "tests/test_protocol.py::test_split_round_trips_and_says_what_is_wrong"),
    ),
    M(
        "protocol-parent-mapping", "hybridhydro/protocol.py",
        "return f\"{parent}-{m.mapping if regionalised else 'uniform'}\"",
        "return f\"{parent}-{m.mapping if regionalised else 'distributed'}\"",
        "a hybrid's parent pre-calibrated distributed instead of uniform (smash's guide)",
        ("tests/test_protocol.py::test_model_names_stages_and_parents",),
    ),
    # ------------------------------------------------------------------ io/*
    M(
        "io-area-km2", "hybridhydro/io/smash_layout.py",
        'out[col] = values * (1e6 if col == "area" else 1.0)',
        'out[col] = values * (1e3 if col == "area" else 1.0)',
        "gauge areas km2 -> m2 with 1e3 instead of 1e6",
        ("tests/test_io.py::test_user_directory_layout",),
    ),
    M(
        "io-pet-substep-weight", "hybridhydro/io/_series.py",
        "weight = PET_HOURLY_PROFILE[hour] * np.float32(dt / 3600)",
        "weight = PET_HOURLY_PROFILE[hour]",
        "sub-hourly steps each get the whole hour's share of the daily PET",
        ("tests/test_io.py::test_pet_weights_cover_the_day",),
    ),
    M(
        "io-qobs-last-line", "hybridhydro/io/_qobs.py",
        "lo, hi = max(first_row, 0), min(first_row + len(times), len(body))",
        "lo, hi = max(first_row, 0), min(first_row + len(times), len(body) - 1)",
        "qobs reader drops the file's last value (smash 1.3's off-by-one)",
        ("tests/test_io.py::test_qobs_file_layout",),
    ),
    M(
        "io-netcdf-string-dtype", "hybridhydro/io/netcdf.py",
        "data = _for_storage(ds.load(), fmt)",
        "data = ds.load()",
        "write_basin no longer records the width of string variables",
        ("tests/test_io.py::test_round_trip_without_gauges",
         "tests/test_mutants.py::test_a_basin_with_no_gauge_left_keeps_the_width_of_its_gauge_codes"),
    ),
    M(
        "io-raster-offset-truncated", "hybridhydro/io/_rasters.py",
        "offset = round((grid_start - r_start) / r_res)",
        "offset = int((grid_start - r_start) / r_res)",
        "raster window offset truncated instead of rounded half to even",
        ("tests/test_io.py::test_rasters_of_other_geometries_read_as_smash",),
    ),
    # ------------------------------------------------------------------ pipeline/params.py
    M(
        "params-merge-replaces", "hybridhydro/pipeline/params.py",
        "out[key] = deep_merge(out[key], value)",
        "out[key] = dict(value)",
        "a case file's section replaces the base's section instead of merging key by key",
        ("tests/test_params.py",),
    ),
    # ------------------------------------------------------------------ synthetic.py
    M(
        "synthetic-discharge-unit", "hybridhydro/synthetic.py",
        "return q_mm * 1e-3 * area_m2 / dt",
        "return q_mm * area_m2 / dt",
        "synthetic qobs mm -> m3/s without the 1e-3 (1000x too large)",
        ("tests/test_synthetic.py::test_forcing_and_discharge_are_physical",
         "tests/test_mutants.py::test_synthetic_discharge_carries_a_plausible_share_of_the_rain"),
    ),
    # ------------------------------------------------------------------ basin.py
    M(
        "basin-d8-range", "hybridhydro/basin.py",
        "if codes.size and (codes.min() < 1 or codes.max() > 8):",
        "if codes.size and (codes.min() < 0 or codes.max() > 8):",
        "check_basin accepts an active cell with no flow direction (code 0)",
        ("tests/test_synthetic.py::test_follows_the_basin_schema",
         "tests/test_mutants.py::test_check_basin_refuses_an_active_cell_without_a_direction"),
    ),
    # ------------------------------------------------------------------ pipeline/ (run record, batch)
    M(
        "record-file-hash-ignored", "hybridhydro/pipeline/record.py",
        "                if file_sha256(path) != digest:",
        "                if False:",
        "a stage's file changed by hand still counts as current (its hash is not compared)",
        ("tests/test_run_integrity.py::test_the_record_names_each_stage_its_files_and_the_parameters",),
    ),
    M(
        "record-params-ignored", "hybridhydro/pipeline/record.py",
        '        elif record.get("params_sha256") != current:',
        "        elif False:",
        "a stage made from other parameters still counts as current",
        ("tests/test_run_integrity.py::test_a_later_stage_is_refused_on_files_made_from_other_parameters",),
    ),
    M(
        "record-lock-shared", "hybridhydro/pipeline/record.py",
        "fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)",
        "fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)",
        "the run directory's lock is shared: two runs write into one directory",
        ("tests/test_run_integrity.py::test_a_second_process_cannot_write_into_a_locked_run",),
    ),
    M(
        "batch-iqr-from-median", "hybridhydro/pipeline/batch.py",
        'stats["iqr"] = stats["q75"] - stats["q25"]',
        'stats["iqr"] = stats["q75"] - stats["median"]',
        "the IQR across seeds is measured from the median instead of the first quartile",
        ("tests/test_batch.py::test_summary_median_and_iqr_across_seeds_match_hand_computation",),
    ),
    # ------------------------------------------------------------------ checkpoints, saved models
    M(
        "checkpoint-name-cut", "hybridhydro/calibration/checkpoints.py",
        'return path if path.suffix == ".npz" else path.with_name(path.name + ".npz")',
        'return path.with_suffix(".npz")',
        "a checkpoint name is cut at its last dot (ck_0.01 and ck_0.05 share ck_0.npz)",
        ("tests/test_checkpoints.py::test_two_checkpoints_with_dotted_names_stay_apart",),
    ),
    M(
        "checkpoint-data-not-fingerprinted", "hybridhydro/calibration/__init__.py",
        "data=fingerprint(data), code=code_fingerprint())",
        "data=fingerprint(start), code=code_fingerprint())",
        "the checkpoint's data fingerprint covers the starting point instead of the data",
        ("tests/test_checkpoints.py::test_a_checkpoint_of_other_data_is_refused",),
    ),
    M(
        "checkpoint-lbfgsb-inexact", "hybridhydro/calibration/optimizers.py",
        'if checkpoint is not None and state["it"] % checkpoint_every == 0 and not self.exact_resume:',
        'if checkpoint is not None and state["it"] % checkpoint_every == 0:',
        "L-BFGS-B saves mid-run checkpoints under exact_resume (a resumed run differs in the last digits)",
        ("tests/test_protocol_checkpoints.py::test_an_interrupted_stage_resumes_to_the_same_models",),
    ),
    M(
        "saved-model-hash-ignored", "hybridhydro/calibration/result.py",
        "        if found != digest:",
        "        if False:",
        "a saved model's file changed on disk loads without a word",
        ("tests/test_saved_models.py::test_a_changed_file_is_named",),
    ),
    # ------------------------------------------------------------------ io/cf
    M(
        "cf-daily-step-in-hours", "hybridhydro/io/cf.py",
        '_NAMED_STEPS = ((86400, "d"), (3600, "h"), (60, "min"), (1, "s"))',
        '_NAMED_STEPS = ((86400, "h"), (3600, "h"), (60, "min"), (1, "s"))',
        "a quantity per daily step is written per hour",
        ("tests/test_outputs.py::test_step_units_state_the_step_and_parse",
         "tests/test_outputs.py::test_a_rate_per_step_converts_to_the_same_rate"),
    ),
    # ------------------------------------------------------------------ dates.py
    M(
        "dates-day-first", "hybridhydro/dates.py",
        "        if DAY_OR_MONTH_FIRST.match(text):",
        "        if False:",
        "a date written day first (01/10/2014) read by pandas as month first",
        ("tests/test_dates.py",),
    ),
    M(
        "dates-integer-as-nanoseconds", "hybridhydro/dates.py",
        "        value = str(int(value))  # YAML's reading of an unquoted 201409150000",
        "        return pd.Timestamp(value)",
        "an unquoted 201409150000 in a YAML file read as nanoseconds after 1970",
        ("tests/test_dates.py",),
    ),
    # ------------------------------------------------------------------ io/_series.py
    M(
        "pet-interannual-no-profile", "hybridhydro/io/_series.py",
        "            out[k] = daily[day] * w if w else 0.0",
        "            out[k] = daily[day]",
        "a daily interannual PET given whole to every step of its day (no hourly profile)",
        ("tests/test_new_basin.py::test_a_daily_interannual_pet_is_spread_over_the_day_as_smash_does",),
    ),
    # ------------------------------------------------------------------ pipeline/batch.py
    M(
        "batch-no-preflight", "hybridhydro/pipeline/batch.py",
        "    refused = preflight(cases, stages, notebooks_dir)\n",
        "    refused = []\n",
        "a batch starts with a case its basin cannot serve (it fails when its turn comes)",
        ("tests/test_batch.py::test_a_case_its_basin_cannot_serve_refuses_the_whole_batch_before_any_runs",),
    ),
    # ------------------------------------------------------------------ pipeline/study.py
    M(
        "acceptance-no-diagnosis", "hybridhydro/pipeline/study.py",
        "        if not accepted:\n            if below:",
        "        if False:\n            if below:",
        "a model that is not accepted gets no diagnosis",
        ("tests/test_study.py::test_acceptance_asks_for_every_scenario_above_default_and_0_9_of_the_best",),
    ),
    M(
        "kept-tables-dropped", "hybridhydro/pipeline/study.py",
        "    if BEGIN not in text or END not in text:\n        return None\n",
        "    if True:\n        return None\n",
        "a rerun on a clone without a basin's runs wipes the tables the document holds for it",
        ("tests/test_study.py::test_a_basin_without_records_keeps_the_tables_the_document_holds",),
    ),
    M(
        "netcdf-seal-ignored", "hybridhydro/io/netcdf.py",
        "    if sealed is not None and sealed != _attributes_digest(opened):\n",
        "    if False:\n",
        "a NetCDF file whose attributes were damaged reads back as other text without a word (basins, states)",
        ("tests/test_spinup.py::test_a_damaged_states_file_is_named_and_a_foreign_one_reads",),
    ),
    # ------------------------------------------------------------------ pipeline/ledger.py
    M(
        "record-ignores-params", "hybridhydro/pipeline/ledger.py",
        "    return (record is not None and record.get(\"params_sha256\") == params_hash(case.params)\n",
        "    return (record is not None\n",
        "a record made with other parameters still counts: the study skips a case whose parameters changed",
        ("tests/test_ledger.py",),
    ),
    M(
        "record-skips-health", "hybridhydro/pipeline/ledger.py",
        "    health = run_health(run_dir)\n",
        "    health = {}\n",
        "the records drop the training health: the tables rebuilt on a clone lose the health table",
        ("tests/test_ledger.py",),
    ),
]
del M


# ----------------------------------------------------------------------------------- checks


class MutantError(ValueError):
    pass


def check_mutants(mutants: list[Mutant]) -> None:
    """Refuse a mutant whose original text is missing or ambiguous in the repository's file."""
    problems = []
    ids = [m.id for m in mutants]
    for dup in sorted({i for i in ids if ids.count(i) > 1}):
        problems.append(f"{dup}: the id is used more than once")
    for m in mutants:
        path = ROOT / m.file
        if not path.is_file():
            problems.append(f"{m.id}: {m.file} does not exist")
            continue
        n = path.read_text().count(m.original)
        if n == 0:
            problems.append(f"{m.id}: its original text is missing from {m.file} (the code changed? update the mutant)")
        elif n > 1:
            problems.append(f"{m.id}: its original text occurs {n} times in {m.file}; give more context")
        if m.original == m.mutated:
            problems.append(f"{m.id}: the mutated text equals the original")
        if not m.tests:
            problems.append(f"{m.id}: no test selection")
    if problems:
        raise MutantError("refused mutant(s):\n  " + "\n  ".join(problems))


# ----------------------------------------------------------------------------------- scratch copy


def working_tree_files() -> list[str]:
    """The repository's files as git sees them (tracked and untracked, not ignored)."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, check=True
        ).stdout.decode()
        files = [f for f in out.split("\0") if f]
    except (OSError, subprocess.CalledProcessError):
        files = []
        for top in ("hybridhydro", "tests", "params", "notebooks"):
            files += [str(p.relative_to(ROOT)) for p in (ROOT / top).rglob("*") if p.is_file()]
        files += ["pyproject.toml", "environment.yml"]
    return [f for f in files if (ROOT / f).is_file() and "__pycache__" not in f]


def make_copy(parent: Path, name: str) -> Path:
    dest = parent / name
    for rel in working_tree_files():
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, target)
    return dest


def environment(copy: Path, cache: Path | None) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(copy) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # a mutant of the same size must never meet a stale .pyc
    env.setdefault("MPLBACKEND", "Agg")
    env.setdefault("PYTHONHASHSEED", "0")
    if cache is not None:  # compiled XLA programs shared between runs (keyed on the program itself)
        env["JAX_COMPILATION_CACHE_DIR"] = str(cache)
    return env


def check_import(copy: Path, env: dict) -> str:
    out = subprocess.run(
        [sys.executable, "-c", "import hybridhydro; print(hybridhydro.__file__)"],
        cwd=copy, env=env, capture_output=True, text=True, timeout=300,
    )
    where = out.stdout.strip()
    if out.returncode != 0 or not Path(where).resolve().is_relative_to(copy.resolve()):
        raise RuntimeError(
            f"'import hybridhydro' in the scratch copy resolves to {where or out.stderr.strip()!r}, not to {copy}: "
            "the mutants would not be tested"
        )
    return where


_RUNNING: set[subprocess.Popen] = set()
_LOCK = threading.Lock()


def _kill(proc: subprocess.Popen) -> None:
    """End a pytest this script started, and its children (its own process group)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def run_pytest(copy: Path, env: dict, selection, timeout: float, extra=()) -> tuple[int | None, str, float]:
    """Run pytest in ``copy``; returns (exit code or None on timeout, output, seconds)."""
    shutil.rmtree(copy / ".hypothesis", ignore_errors=True)  # no example replayed from another mutant
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not slow", *extra, *selection]
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd, cwd=copy, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    with _LOCK:
        _RUNNING.add(proc)
    try:
        out, _ = proc.communicate(timeout=timeout)
        code = proc.returncode
    except subprocess.TimeoutExpired:
        _kill(proc)
        out, _ = proc.communicate()
        code = None
    except BaseException:  # Ctrl-C: the child runs in its own session, end it here
        _kill(proc)
        proc.wait()
        raise
    finally:
        with _LOCK:
            _RUNNING.discard(proc)
    return code, out, time.perf_counter() - t0


def _first_failure(output: str) -> str:
    found = re.search(r"^(?:FAILED|ERROR) (.+?)(?: - .*)?$", output, re.M)
    return found.group(1).strip() if found else ""


# ----------------------------------------------------------------------------------- runs


@dataclass
class Outcome:
    mutant: Mutant
    status: str  # caught, caught (timeout), caught (collection error), SURVIVED, BROKEN, ERROR
    seconds: float
    detail: str = ""

    @property
    def caught(self) -> bool:
        return self.status.startswith("caught")

    @property
    def counted(self) -> bool:
        return self.status not in ("BROKEN", "ERROR")


def _covers(entry: str, nodeid: str) -> bool:
    return nodeid == entry or nodeid.startswith(entry + "::") or nodeid.startswith(entry + "[")


def baseline(copy: Path, env: dict, mutants: list[Mutant], timeout: float) -> dict[str, str]:
    """Run the union of the selections once, unmutated: {mutant id: why its selection is broken}."""
    selection = list(dict.fromkeys(t for m in mutants for t in m.tests))
    print(f"baseline: {len(selection)} test selection(s), unmutated ...", flush=True)
    code, out, seconds = run_pytest(copy, env, selection, timeout, extra=("-rfE",))
    print(f"baseline: exit {code} in {seconds:.0f} s", flush=True)
    if code == 0:
        return {}
    failing = [f.strip() for f in re.findall(r"^(?:FAILED|ERROR) (.+?)(?: - .*)?$", out, re.M)]
    broken = {}
    for m in mutants:
        bad = [f for f in failing if any(_covers(t, f) or _covers(f, t) for t in m.tests)]
        if bad:
            broken[m.id] = f"fails unmutated: {bad[0]}"
        elif code is None:
            broken[m.id] = f"the unmutated selection did not finish in {timeout:.0f} s"
        elif not failing and code != 0:
            broken[m.id] = f"pytest exit {code} on the unmutated selection: {out.strip().splitlines()[-1:]}"
    return broken


def run_mutant(m: Mutant, copy: Path, env: dict, timeout: float) -> Outcome:
    path = copy / m.file
    original = path.read_text()
    if original.count(m.original) != 1:
        return Outcome(m, "ERROR", 0.0, "original text not found once in the scratch copy")
    try:
        path.write_text(original.replace(m.original, m.mutated, 1))
        if m.mutated not in path.read_text():
            return Outcome(m, "ERROR", 0.0, "the mutated text did not reach the file")
        code, out, seconds = run_pytest(copy, env, m.tests, timeout, extra=("-x", "-rfE"))
    finally:
        path.write_text(original)
    if path.read_text() != original:
        raise RuntimeError(f"{m.id}: could not restore {path}")
    if code is None:
        return Outcome(m, "caught (timeout)", seconds, f"no result in {timeout:.0f} s")
    if code == 0:
        return Outcome(m, "SURVIVED", seconds)
    if code == 1:
        return Outcome(m, "caught", seconds, _first_failure(out))
    if code == 2:  # interrupted: the mutant broke the collection (an import error, say)
        return Outcome(m, "caught (collection error)", seconds, _first_failure(out))
    last = out.strip().splitlines()[-1] if out.strip() else ""
    return Outcome(m, "ERROR", seconds, f"pytest exit {code}: {last}")


# ----------------------------------------------------------------------------------- report


def table(outcomes: list[Outcome]) -> list[str]:
    head = ("id", "module", "description", "result", "seconds", "first failing test")
    rows = [
        (o.mutant.id, o.mutant.module, o.mutant.description, o.status, f"{o.seconds:.0f}", o.detail)
        for o in outcomes
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * 4 + "---:|---|"]
    for r in rows:
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in r) + " |")
    return lines


def score_line(outcomes: list[Outcome]) -> str:
    counted = [o for o in outcomes if o.counted]
    caught = sum(o.caught for o in counted)
    timeouts = sum(o.status == "caught (timeout)" for o in counted)
    share = caught / len(counted) if counted else float("nan")
    extra = [f"{timeouts} by timeout"] if timeouts else []
    skipped = len(outcomes) - len(counted)
    if skipped:
        extra.append(f"{skipped} not counted (broken selection or error)")
    return f"caught {caught} of {len(counted)} mutants ({share:.0%})" + (f"; {', '.join(extra)}" if extra else "")


def print_table(outcomes: list[Outcome]) -> None:
    widths = [max(len(x) for x in col) for col in zip(*[
        ("id", "module", "description", "result", "s"),
        *[(o.mutant.id, o.mutant.module, o.mutant.description, o.status, f"{o.seconds:.0f}") for o in outcomes],
    ])]
    widths[2] = min(widths[2], 70)

    def line(cells):
        return "  ".join(str(c)[:w].ljust(w) for c, w in zip(cells, widths))

    print(line(("id", "module", "description", "result", "s")))
    print(line(["-" * w for w in widths]))
    for o in outcomes:
        print(line((o.mutant.id, o.mutant.module, o.mutant.description, o.status, f"{o.seconds:.0f}")))


def write_doc(outcomes: list[Outcome], total_s: float, command: str) -> None:
    survivors = [o for o in outcomes if o.status == "SURVIVED"]
    text = [
        "# Mutation testing",
        "",
        f"Run on {_dt.date.today().isoformat()} with `{command}` ({total_s / 60:.0f} min on this machine).",
        "",
        "`tools/mutants.py` holds a list of hand-made mutants of the library: small, realistic bugs "
        "(a sign error, a wrong constant, an off-by-one, a dropped term, a reversed comparison, a wrong "
        "unit factor), each with the few fast tests that should catch it. For each mutant it copies the "
        "working tree into a scratch folder, applies the mutant to the copy only, checks that `import "
        "hybridhydro` resolves to the copy, runs `pytest -x -m \"not slow\"` on the mutant's tests "
        f"there (timeout {TIMEOUT_S} s, counted as caught), and restores the file. The selected tests "
        "first run once unmutated: a mutant whose tests fail there is reported as BROKEN, not scored. "
        "A SURVIVED mutant is a bug the suite would let through: a missing check "
        "(`tests/test_mutants.py` holds the checks added for the mutants the suite first let through). "
        "The script takes a quarter of an hour, so it is **not part of `make test`**; run it with "
        "`make mutants` (`--only ID[,ID]` runs a few, `--list` lists them, `--jobs N` runs N at once).",
        "",
        f"**Score: {score_line(outcomes)}.**",
        "",
        *table(outcomes),
        "",
    ]
    if survivors:
        text += ["Survivors (missing checks):", ""]
        text += [f"* `{o.mutant.id}` ({o.mutant.file}): {o.mutant.description}." for o in survivors]
        text.append("")
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text("\n".join(text))


# ----------------------------------------------------------------------------------- main


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help="comma-separated mutant ids to run (default: all)")
    parser.add_argument("--list", action="store_true", help="list the mutants and their tests, run nothing")
    parser.add_argument("--jobs", type=int, default=1, help="mutants run at once, each in its own copy (default 1)")
    parser.add_argument("--timeout", type=float, default=TIMEOUT_S, help=f"seconds per mutant (default {TIMEOUT_S})")
    parser.add_argument("--no-baseline", action="store_true", help="skip the unmutated run of the selections")
    parser.add_argument("--no-jax-cache", action="store_true", help="no persistent XLA compilation cache")
    parser.add_argument("--doc", choices=("auto", "yes", "no"), default="auto",
                        help=f"write {DOC.relative_to(ROOT)} (auto: on full runs only)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    args = parser.parse_args(argv)

    mutants = MUTANTS
    if args.only:
        wanted = [w.strip() for w in args.only.split(",") if w.strip()]
        unknown = [w for w in wanted if w not in {m.id for m in MUTANTS}]
        if unknown:
            print(f"unknown mutant id(s) {unknown}; --list shows them", file=sys.stderr)
            return 2
        mutants = [m for m in MUTANTS if m.id in wanted]
    try:
        check_mutants(mutants)
    except MutantError as err:
        print(err, file=sys.stderr)
        return 2
    if args.list:
        for m in mutants:
            print(f"{m.id:30s} {m.file:40s} {m.description}")
            for t in m.tests:
                print(f"{'':30s}   {t}")
        return 0
    if args.jobs < 1:
        print("--jobs must be >= 1", file=sys.stderr)
        return 2

    t0 = time.perf_counter()
    scratch = Path(tempfile.mkdtemp(prefix="hybridhydro-mutants-"))
    cache = None if args.no_jax_cache else scratch / "jax-cache"
    print(f"scratch copies in {scratch}; {len(mutants)} mutant(s), {args.jobs} at a time", flush=True)
    outcomes: list[Outcome] = []
    try:
        copies = [make_copy(scratch, f"copy{k}") for k in range(min(args.jobs, len(mutants)))]
        envs = [environment(c, cache) for c in copies]
        for c, e in zip(copies, envs):
            print(f"import hybridhydro -> {check_import(c, e)}", flush=True)
        broken = {} if args.no_baseline else baseline(copies[0], envs[0], mutants, BASELINE_TIMEOUT_S)
        free = list(range(len(copies)))
        free_lock = threading.Lock()

        def one(m: Mutant) -> Outcome:
            if m.id in broken:
                o = Outcome(m, "BROKEN", 0.0, broken[m.id])
            else:
                with free_lock:
                    k = free.pop()
                try:
                    o = run_mutant(m, copies[k], envs[k], args.timeout)
                finally:
                    with free_lock:
                        free.append(k)
            print(f"  {o.mutant.id:30s} {o.status:26s} {o.seconds:5.0f} s  {o.detail}", flush=True)
            return o

        if len(copies) == 1:
            outcomes = [one(m) for m in mutants]
        else:
            pool = ThreadPoolExecutor(max_workers=len(copies))
            try:
                outcomes = list(pool.map(one, mutants))
            finally:
                pool.shutdown(wait=False, cancel_futures=True)
    except KeyboardInterrupt:
        with _LOCK:
            for proc in list(_RUNNING):
                _kill(proc)
        print("interrupted; the repository was not touched", file=sys.stderr)
        return 130
    finally:
        if args.keep:
            print(f"scratch kept: {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    total = time.perf_counter() - t0
    print()
    print_table(outcomes)
    print()
    print(f"{score_line(outcomes)}; {total / 60:.1f} min in all")
    write = args.doc == "yes" or (args.doc == "auto" and not args.only)
    if write:
        given = list(sys.argv[1:] if argv is None else argv)
        command = "make mutants" if not given else "python tools/mutants.py " + " ".join(given)
        write_doc(outcomes, total, command)
        print(f"written to {DOC.relative_to(ROOT)}")
    return 0 if all(o.caught for o in outcomes if o.counted) else 1


if __name__ == "__main__":
    sys.exit(main())

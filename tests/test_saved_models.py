"""Saved calibrations: a directory replaced whole, a manifest of sha256s checked on loading, the
CRS carried, and regionalisation networks restored and applied to another basin (a sub-basin
cropped around one gauge of Cance) with the training basin's descriptor statistics."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import xarray as xr

import hybridhydro as hh
from hybridhydro.basin import check_basin
from hybridhydro.crop import crop_basin

GAUGE = "V3515010"  # an upstream gauge of Cance: 108 of its 383 active cells


@pytest.fixture(scope="module")
def cance():
    return hh.read_smash_dataset("Cance", "2014-09-15 00:00", "2014-09-18 00:00", progress=False)


@pytest.fixture(scope="module")
def sub(cance):
    return crop_basin(cance, GAUGE)


def _window(cance, sub):
    """Rows and columns of Cance that the cropped basin covers."""
    r0 = int(np.flatnonzero(np.isclose(cance["y"].values, sub["y"].values[0]))[0])
    c0 = int(np.flatnonzero(np.isclose(cance["x"].values, sub["x"].values[0]))[0])
    return slice(r0, r0 + sub.sizes["y"]), slice(c0, c0 + sub.sizes["x"])


@pytest.fixture(scope="module")
def ann(cance):
    return hh.calibrate(cance, "gr4-lr", "ann", "adam", 2, hidden=(8,), learning_rate=0.01, progress=False)


@pytest.fixture(scope="module")
def ann_saved(ann, tmp_path_factory):
    return ann.save(tmp_path_factory.mktemp("models") / "gr4-ann")


# ------------------------------------------------------------------------------ cropping


@pytest.mark.smash
def test_crop_keeps_the_catchment_of_one_gauge_and_runs_as_the_whole_basin(cance, sub):
    check_basin(sub, where="the cropped basin")
    assert list(sub["gauge"].values) == [GAUGE]
    assert sub.attrs["cropped_to"] == GAUGE
    assert 0 < int(sub["active_cell"].sum()) < int(cance["active_cell"].sum())
    rows, cols = _window(cance, sub)
    active = sub["active_cell"].values
    assert cance["active_cell"].values[rows, cols][active].all()
    for name in ("flwacc", "flwpar", "dx"):  # the catchment's own fields: all its upstream cells are inside
        np.testing.assert_array_equal(sub[name].values[active], cance[name].values[rows, cols][active])
    g = sub["gauge_row"].item(), sub["gauge_col"].item()
    assert active[g] and sub["flwdst"].values[g] == 0 and np.isnan(sub["flwdst"].values[~active]).all()
    assert sub.attrs["xmin"] == pytest.approx(float(sub["x"].values[0]) - 0.5 * sub.attrs["xres"])
    assert sub.attrs["ymax"] == pytest.approx(float(sub["y"].values[0]) + 0.5 * sub.attrs["yres"])
    # the gauge sees the same water alone as inside the whole basin
    whole = hh.simulate(cance, "gr4-lr", {"cp": 200.0, "ci": 1.0})["q"].sel(gauge=GAUGE).values
    alone = hh.simulate(sub, "gr4-lr", {"cp": 200.0, "ci": 1.0})["q"].sel(gauge=GAUGE).values
    np.testing.assert_allclose(alone, whole, rtol=1e-5, atol=1e-7)
    assert cance.attrs["xmin"] != sub.attrs["xmin"]  # the basin's own attributes are left alone


@pytest.mark.smash
def test_crop_names_an_unknown_gauge(cance):
    with pytest.raises(ValueError, match=r"unknown gauge 'X1'; the basin's gauges are V3524010, V3515010"):
        crop_basin(cance, "X1")


# ------------------------------------------------------------------------------ regionalisation


@pytest.mark.smash
def test_a_reloaded_ann_regionalises_another_basin_as_the_trained_one(cance, sub, ann, ann_saved):
    loaded = hh.load_calibration(ann_saved)
    assert isinstance(loaded.network, hh.networks.DescriptorMLP)
    assert loaded.descriptor_scaling.names == ann.descriptor_scaling.names == ("slope", "dd")
    before, after = ann.regionalise(sub), loaded.regionalise(sub)
    rows, cols = _window(cance, sub)
    active = sub["active_cell"].values
    assert set(before.data_vars) == {"cp", "ct", "kexc", "llr"}
    for name in before.data_vars:
        np.testing.assert_array_equal(after[name].values, before[name].values)
        # pointwise network, training statistics: the cells' maps are Cance's maps on those cells
        np.testing.assert_array_equal(before[name].values[active], ann.parameters[name][rows, cols][active])
        assert np.isnan(before[name].values[~active]).all()
        assert before[name].attrs["units"] == hh.structures.PARAMETER_UNITS.get(name, "")
    assert before.rio.crs == cance.rio.crs
    # the sub-basin's own statistics are not the training ones (a regionalisation that used them would differ)
    own = hh.mapping.descriptor_scaling(sub)
    assert not np.allclose(own.offset, loaded.descriptor_scaling.offset)


@pytest.mark.smash
def test_a_reloaded_regionalisation_simulates_the_cropped_basin(sub, ann, ann_saved):
    loaded = hh.load_calibration(ann_saved)
    q = loaded.simulate(sub)["q"]
    assert list(q["gauge"].values) == [GAUGE] and np.isfinite(q.values).all()
    np.testing.assert_array_equal(q.values, ann.simulate(sub)["q"].values)
    maps = ann.regionalise(sub)
    direct = hh.simulate(sub, "gr4-lr", {n: maps[n].values for n in maps.data_vars})["q"]
    np.testing.assert_array_equal(q.values, direct.values)


@pytest.mark.smash
def test_a_reloaded_ann_runs_on_its_own_basin_and_warm_starts_on_another(cance, sub, ann, ann_saved):
    loaded = hh.load_calibration(ann_saved)
    np.testing.assert_array_equal(loaded.simulate(cance)["q"].values, ann.simulate(cance)["q"].values)
    # a warm start on the sub-basin starts from the trained function of the training statistics
    again = hh.calibrate(sub, "gr4-lr", "ann", "adam", 0, hidden=(8,), warm_start=loaded, progress=False)
    for what in ("offset", "scale"):
        np.testing.assert_array_equal(getattr(again.descriptor_scaling, what), getattr(loaded.descriptor_scaling, what))
    maps = loaded.regionalise(sub)
    for name in maps.data_vars:
        np.testing.assert_array_equal(again.parameters[name], maps[name].values)


@pytest.mark.smash
def test_a_cnn_round_trips(cance, tmp_path):
    cnn = hh.calibrate(cance, "gr4-lr", "cnn", "adam", 1, hidden=(4,), learning_rate=0.01, progress=False)
    loaded = hh.load_calibration(cnn.save(tmp_path / "gr4-cnn"))
    assert isinstance(loaded.network, hh.networks.DescriptorCNN)
    assert hh.networks.architecture(loaded.network) == hh.networks.architecture(cnn.network)
    on_cance = loaded.regionalise(cance)
    active = cance["active_cell"].values
    for name in on_cance.data_vars:
        np.testing.assert_array_equal(on_cance[name].values[active], cnn.parameters[name][active])
    grid = hh.mapping.transform_descriptors(cance, scaling=cnn.descriptor_scaling)
    np.testing.assert_array_equal(np.asarray(loaded.network(grid)), np.asarray(cnn.network(grid)))


def test_a_reloaded_multi_linear_mapping_regionalises_a_sub_basin(tmp_path):
    b = hh.synthetic_basin(nrow=8, ncol=8, ntime=24, seed=0)
    result = hh.calibrate(b, "gr4-lr", "multi-linear", "lbfgsb", 2, parameters=("cp", "ct"), gauges="all",
                          progress=False)
    loaded = hh.load_calibration(result.save(tmp_path / "gr4-ml"))
    assert set(loaded.controls["mapping"]) == {"coefficients", "intercept"}
    part = crop_basin(b, "SYN001")
    rows, cols = _window(b, part)
    active = part["active_cell"].values
    maps = loaded.regionalise(part)
    for name in ("cp", "ct"):
        np.testing.assert_array_equal(maps[name].values, result.regionalise(part)[name].values)
        np.testing.assert_allclose(maps[name].values[active], result.parameters[name][rows, cols][active], rtol=1e-6)


@pytest.mark.smash
def test_only_a_regionalisation_applies_to_another_basin(sub, tmp_path):
    b = hh.synthetic_basin(nrow=6, ncol=6, ntime=24, seed=0)
    result = hh.calibrate(b, "gr4-lr", "distributed", "lbfgsb", 1, parameters=("cp",), progress=False)
    with pytest.raises(ValueError, match="'distributed' calibration's parameters are maps of its own grid"):
        result.regionalise(sub)
    with pytest.raises(ValueError, match=r"the basin's grid \(16 x 13 cells\) is not the one this 'distributed'"):
        result.simulate(sub)


# ------------------------------------------------------------------------------ files


@pytest.fixture(scope="module")
def small():
    return hh.synthetic_basin(nrow=6, ncol=6, ntime=24, seed=0)


@pytest.fixture(scope="module")
def hybrid(small):
    return hh.calibrate(small, "gr4_mlp-lr", "uniform", "adam", 1, gauges="all", progress=False)


@pytest.fixture(scope="module")
def conceptual(small):
    return hh.calibrate(small, "gr4-lr", "uniform", "adam", 1, gauges="all", progress=False)


def _files(directory):
    return sorted(p.name for p in directory.iterdir())


def test_overwrite_replaces_the_directory_whole(hybrid, conceptual, tmp_path):
    d = hybrid.save(tmp_path / "model")
    assert "nn_parameters.npz" in _files(d)
    with pytest.raises(FileExistsError, match="already holds a calibration; pass overwrite=True"):
        conceptual.save(d)
    conceptual.save(d, overwrite=True)
    assert _files(d) == ["calibration.json", "history.csv", "mapping_controls.npz", "parameters.nc"]
    assert _files(tmp_path) == ["model"]  # no temporary directory left beside it
    back = hh.load_calibration(d)
    assert back.structure == "gr4-lr" and back.nn_parameters is None


def test_a_directory_of_other_files_is_never_overwritten(conceptual, tmp_path):
    d = tmp_path / "mine"
    d.mkdir()
    (d / "notes.txt").write_text("keep me")
    for overwrite in (False, True):
        with pytest.raises(FileExistsError, match=r"holds files but no calibration \(no calibration.json\): saving "
                                                  r"would delete them, so it is refused even with overwrite=True"):
            conceptual.save(d, overwrite=overwrite)
    assert _files(d) == ["notes.txt"] and (d / "notes.txt").read_text() == "keep me"
    (tmp_path / "empty").mkdir()
    conceptual.save(tmp_path / "empty")  # an empty directory is no one's files
    assert "calibration.json" in _files(tmp_path / "empty")


def test_the_manifest_lists_every_file_with_its_sha256(hybrid, tmp_path):
    import hashlib

    d = hybrid.save(tmp_path / "model")
    manifest = json.loads((d / "calibration.json").read_text())
    assert sorted(manifest["files"]) == [n for n in _files(d) if n != "calibration.json"]
    for name, digest in manifest["files"].items():
        assert hashlib.sha256((d / name).read_bytes()).hexdigest() == digest


@pytest.mark.parametrize("name", ["history.csv", "nn_parameters.npz", "parameters.nc"])
def test_a_changed_file_is_named(hybrid, tmp_path, name):
    d = hybrid.save(tmp_path / "model")
    data = bytearray((d / name).read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit, same length
    (d / name).write_bytes(bytes(data))
    with pytest.raises(ValueError, match=rf"{d / name} cannot be read as the file that was saved: its sha256 .* is "
                                         r"not .*, the one calibration.json records .*save the calibration again"):
        hh.load_calibration(d)


def test_a_missing_file_is_named(hybrid, tmp_path):
    d = hybrid.save(tmp_path / "model")
    (d / "nn_parameters.npz").unlink()
    with pytest.raises(FileNotFoundError, match=r"holds calibration.json but no nn_parameters.npz"):
        hh.load_calibration(d)


def test_a_hybrid_without_its_weights_is_refused_in_an_older_manifest(hybrid, tmp_path):
    d = hybrid.save(tmp_path / "model")
    manifest = json.loads((d / "calibration.json").read_text())
    del manifest["files"]  # as hybridhydro wrote it before the file list
    (d / "calibration.json").write_text(json.dumps(manifest))
    assert hh.load_calibration(d).nn_parameters is not None
    (d / "nn_parameters.npz").unlink()
    with pytest.raises(FileNotFoundError, match=r"hybrid structure 'gr4_mlp-lr' but no nn_parameters.npz .*zero "
                                                r"weights"):
        hh.load_calibration(d)


@pytest.mark.smash
def test_a_lost_network_file_is_named(ann_saved, tmp_path):
    d = shutil.copytree(ann_saved, tmp_path / "model")
    (d / "network.npz").unlink()
    with pytest.raises(FileNotFoundError, match=r"holds calibration.json but no network.npz"):
        hh.load_calibration(d)


@pytest.mark.smash
def test_the_parameter_maps_carry_the_basins_crs(cance, ann, ann_saved):
    assert ann.crs and "Lambert-93" in ann.crs
    with xr.open_dataset(ann_saved / "parameters.nc", decode_coords="all") as ds:
        assert ds.rio.crs == cance.rio.crs
        assert ds["cp"].attrs["units"] == "mm"
    loaded = hh.load_calibration(ann_saved)
    assert loaded.crs == ann.crs and loaded.parameter_maps().rio.crs == cance.rio.crs
    assert set(loaded.parameters) == set(ann.parameters)

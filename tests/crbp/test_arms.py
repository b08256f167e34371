import pytest

from crbp_panoptic.crbp import Arm, parse_arm


@pytest.mark.parametrize(
    "text, arm, label",
    [
        ("ff", Arm("ff"), "feedforward"),
        ("crbp:20", Arm("crbp", 20), "C-RBP-20"),
        ("BPTT:3", Arm("bptt", 3), "BPTT-3"),
        ("crbp:20:sub0.25", Arm("crbp", 20, 0.25), "C-RBP-20 (LCP on 25% of rows)"),
        ("cbptt:5:sub8", Arm("cbptt", 5, 8), "C-BPTT-5 (LCP on 8 rows)"),
        ("crbp:20:crop32", Arm("crbp", 20, None, 32), "C-RBP-20 (LCP on a 32x32 crop)"),
        ("crbp:20:spectral", Arm("crbp", 20, lcp_kind="spectral"), "C-RBP-20 (spectral penalty)"),
        ("crbp:20:colsum", Arm("crbp", 20), "C-RBP-20"),
        ("crbp:20:k0", Arm("crbp", 20, neumann_steps=0), "C-RBP-20 (one-step gradient)"),
        ("rbp:20:k5", Arm("rbp", 20, neumann_steps=5), "RBP-20 (5 Neumann terms)"),
        (
            "crbp:20:k0:spectral:sub0.5",
            Arm("crbp", 20, 0.5, lcp_kind="spectral", neumann_steps=0),
            "C-RBP-20 (LCP on 50% of rows) (spectral penalty) (one-step gradient)",
        ),
    ],
)
def test_parse_arm_round_trips_and_labels(text, arm, label):
    parsed = parse_arm(text)
    assert parsed == arm
    assert parsed.label == label
    assert parse_arm(parsed.name) == parsed


def test_arm_config_opts_select_the_arm():
    opts = parse_arm("crbp:10:sub0.5").config_opts()
    assert dict(zip(opts[::2], opts[1::2])) == {
        "MODEL.CRBP.GRAD": "crbp",
        "MODEL.CRBP.STEPS": 10,
        "MODEL.CRBP.LCP_SUBSAMPLE": 0.5,
        "MODEL.CRBP.LCP_CROP": 0,
        "MODEL.CRBP.LCP_KIND": "colsum",  # the paper's rule, whatever the config says
    }
    opts = parse_arm("crbp:10:spectral:k0").config_opts()
    assert dict(zip(opts[::2], opts[1::2])) == {
        "MODEL.CRBP.GRAD": "crbp",
        "MODEL.CRBP.STEPS": 10,
        "MODEL.CRBP.LCP_SUBSAMPLE": 0.0,
        "MODEL.CRBP.LCP_CROP": 0,
        "MODEL.CRBP.LCP_KIND": "spectral",
        "MODEL.CRBP.LCP_REDUCTION": "mean",
        "MODEL.CRBP.NEUMANN_STEPS": 0,
    }
    assert parse_arm("ff").config_opts() == []


@pytest.mark.parametrize(
    "text, words",
    [
        ("crbp", "at least 2"),
        ("foo:3", "unknown mode 'foo'"),
        ("crbp:0", "steps '0'"),
        ("crbp:x", "steps 'x'"),
        ("bptt:3:sub0.5", "penalised mode"),
        ("rbp:3:spectral", "option 'spectral' needs a penalised mode"),
        ("crbp:3:sub1.5", "option 'sub1.5'"),
        ("crbp:3:crop0", "option 'crop0'"),
        ("crbp:3:other", "unknown option 'other'"),
        ("crbp:3:sub0.5:crop8", "at most one cheap penalty"),
        ("crbp:3:spectral:colsum", "at most one penalty kind"),
        ("crbp:3:k1:k2", "at most one Neumann terms"),
        ("crbp:3:k-1", "option 'k-1' must be kN with N an integer >= 0"),
        ("crbp:3:kx", "option 'kx' must be kN"),
        ("bptt:6:k0", "option 'k0' needs an RBP mode"),
    ],
)
def test_parse_arm_names_the_bad_text(text, words):
    with pytest.raises(ValueError, match="MODE:STEPS") as err:
        parse_arm(text)
    assert words in str(err.value) and repr(text) in str(err.value)


def test_arm_refiner_kwargs_build_the_arm():
    from crbp_panoptic.crbp import RecurrentRefiner

    kwargs = parse_arm("crbp:7:sub0.25").refiner_kwargs()
    assert kwargs == {"mode": "crbp", "steps": 7, "lcp_subsample": 0.25}
    assert parse_arm("cbptt:3:crop8").refiner_kwargs() == {
        "mode": "cbptt",
        "steps": 3,
        "lcp_crop": 8,
    }
    refiner = RecurrentRefiner(channels=4, num_groups=2, **kwargs)
    assert (refiner.mode, refiner.steps, refiner.lcp_subsample) == ("crbp", 7, 0.25)
    kwargs = parse_arm("crbp:7:spectral:k0").refiner_kwargs(neumann_steps=15, lcp_tau=0.5)
    assert kwargs == {
        "mode": "crbp",
        "steps": 7,
        "lcp_kind": "spectral",
        "neumann_steps": 0,  # the arm's own value wins over the default
        "lcp_tau": 0.5,
    }
    refiner = RecurrentRefiner(channels=4, num_groups=2, **kwargs)
    assert (refiner.lcp_kind, refiner.neumann_steps) == ("spectral", 0)
    assert parse_arm("crbp:7").refiner_kwargs(neumann_steps=15)["neumann_steps"] == 15
    with pytest.raises(ValueError, match="arm='ff' has no recurrent module"):
        parse_arm("ff").refiner_kwargs()

"""fedfit.paired: the paired change between two rounds, per client and per image."""
import numpy as np
import pytest

from fedfit.paired import NOISE_SE, client_change, decode_answers, encode_answers, image_change


def test_answers_round_trip_and_cost_about_four_bytes_per_image():
    rng = np.random.default_rng(0)
    ids, right = rng.permutation(5000)[:1837] + 70000, rng.random(1837) < 0.37
    rec = encode_answers(ids, right)
    back_ids, back_right = decode_answers(rec)
    assert np.array_equal(back_ids, ids) and np.array_equal(back_right, right)
    assert len(rec["ids"]) + len(rec["right"]) <= 1.34 * (4 * 1837 + 1837 / 8) + 8  # base64 of int32 + bits
    with pytest.raises(ValueError, match="1838 images hold 1837 ids"):
        decode_answers({**rec, "n": 1838})
    big = np.array([3, 2**40])  # an id past int32 takes 8 bytes
    assert np.array_equal(decode_answers(encode_answers(big, [True, False]))[0], big)


def test_image_change_pairs_the_same_images_and_refuses_others():
    ids = np.arange(10)
    first = encode_answers(ids, ids < 5)                    # 50%
    last = encode_answers(ids, (ids < 4) | (ids == 9))      # image 4 lost, image 9 gained: 50%, change 0
    ch = image_change(first, last)
    assert (ch.mean, ch.n) == (0.0, 10) and ch.se == pytest.approx(100 * np.sqrt(2 / 9) / np.sqrt(10))
    assert image_change(first, encode_answers(ids[::-1], ids < 5)) is None  # other order: not paired
    assert image_change(first, {}) is None and image_change(None, last) is None


def test_client_change_uses_training_clients_evaluated_in_both_rounds():
    first = {"0": {"accuracy": 0.5}, "1": {"accuracy": 0.6}, "2": {"accuracy": 0.9}, "7": {"accuracy": 0.0}}
    last = {"0": {"accuracy": 0.6}, "1": {"accuracy": 0.5}, "7": {"accuracy": 1.0}}  # 2 not evaluated; 7 a new user
    ch = client_change(first, last, num_clients=3)
    assert ch.n == 2 and ch.mean == pytest.approx(0.0) and ch.se == pytest.approx(10.0)
    assert ch.within_noise and str(ch) == "+0.00 +- 10.00"
    assert client_change({}, last, 3) is None


def test_a_drop_is_noise_only_within_two_standard_errors():
    from fedfit.paired import Change

    assert NOISE_SE == 2.0
    assert Change(-1.0, 0.5, 20).within_noise and not Change(-1.01, 0.5, 20).within_noise
    assert not Change(-0.1, 0.0, 20).within_noise and Change(0.0, 0.0, 20).within_noise
    assert Change(-1.36, 0.46, 1837).t == pytest.approx(-2.96, abs=0.01)

"""``fedfit dp-epsilon``: both epsilons of a DP federation from its options alone, without training."""
from fedfit.app import cli


def _rows(out: str) -> list[list[str]]:
    """The table's rows (z, epsilon add/remove, epsilon replace one), as printed."""
    return [[c.strip() for c in line.split("|")[1:4]] for line in out.splitlines() if line[2:3].isdigit()]


def test_both_epsilons_for_a_large_population(capsys):
    """README's privacy table (10 of 1,000 clients per round, 10 rounds, delta = 1/1,000), as the
    lab script of commit 6ee881f printed it."""
    assert cli.main(["dp-epsilon", "num_clients=1000", "clients_per_round=10", "rounds=10",
                     "--noise", "0.3", "1", "2", "4"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("10 releases, 10 of 1000 clients per round, delta = 0.001\n")
    assert _rows(out) == [["0.3", "92.9", "365"], ["1", "15.5", "4.03"], ["2", "6.24", "0.517"], ["4", "2.66", "0.0908"]]


def test_the_sampled_epsilon_is_given_for_seeded_options_and_rounds_count_releases(capsys):
    """A seeded run reports no amplified epsilon; the command gives what a secret sample would spend.
    Twice the rounds: both epsilons grow."""
    base = ["num_clients=40", "clients_per_round=10"]
    assert cli.main(["dp-epsilon", *base, "dp=server", "dp_randomness=seeded", "--noise", "1"]) == 0
    seeded = _rows(capsys.readouterr().out)
    assert cli.main(["dp-epsilon", *base, "--noise", "1"]) == 0
    assert _rows(capsys.readouterr().out) == seeded == [["1", "12.1", "22.9"]]  # README's 10-of-40 row at z = 1
    assert cli.main(["dp-epsilon", *base, "rounds=20", "--noise", "1"]) == 0
    longer = _rows(capsys.readouterr().out)[0]
    assert float(longer[1]) > 12.1 and float(longer[2]) > 22.9


def test_a_bad_option_is_one_line(capsys):
    assert cli.main(["dp-epsilon", "num_clientz=3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fedfit: error:") and "num_clientz" in err[0]

"""Options of evaluation (``strategies.evaluation``): which clients, how often, personalized fine-tuning steps
and the global head."""
from fedfit.options.spec import Option

GROUP = "evaluation"

OPTIONS = (
    Option("eval_clients", -1,
           "training clients evaluated per round (a seeded sample); 0 = all; -1 = all up to 50, else "
           "a sample of 50 (new users are always all evaluated)"),
    Option("eval_every", 1,
           "evaluate every this many rounds (round 0 and the last round always)", ge=1, unit="rounds"),
    Option("personalize_steps", 0,
           "also report accuracy after this many local steps (0 = off)", ge=0),
    Option("global_eval", True,
           "global accuracy from aggregated class means (extra round trip)"),
)

"""Options of ``adapter = case`` (``fedfit.adapters.case``): UpperCaSE's linear head and which training CaSE gets."""
from fedfit.options.spec import Option

GROUP = "adapter: case (CaSE and UpperCaSE)"

OPTIONS = (
    Option("case_linear_steps", 500,
           "UpperCaSE: Adam steps of the client's linear head per evaluation (and per task with "
           "case_training = uppercase)", ge=0),
    Option("case_training", "fit",
           "adapter = case: fit (FiT's episodic loop through the Naive Bayes head) | uppercase (per "
           "task: the linear head fitted first, then CaSE by its loss)", choices=("fit", "uppercase")),
)

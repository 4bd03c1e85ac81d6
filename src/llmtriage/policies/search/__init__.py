"""Policy search: the policy that best meets one objective, chosen on the training split.

A user's question is never "which router family is best in general" but "what should I run
on my traffic, for this budget or this quality". The search answers it the way FrugalGPT
chooses its cascade, with cross-validation instead of a peek at the test data:

1. **Candidates.** Every single model; every router family; calibrated cascades over
   searched ladders (ordered subsets of two to four models among those near the train
   split's cost-quality hull, ending at one of its strongest models, not "every model on
   the frontier"); agreement cascades where the answers' texts are recorded; cascade
   routing. Each with its trade-off swept.
2. **Out-of-fold outcomes.** Each candidate is fitted on all folds but one and replayed, by
   the same loop that serves, on the held-out fold; a candidate that learns nothing is
   replayed once on the whole split. Every candidate and setting thus gets one honest
   outcome per training prompt.
3. **The choice.** The :class:`Objective` picks one (candidate, setting) from those
   outcomes; with a guarantee (``delta``) only settings whose quality is certified at
   level ``1 - delta`` (Bonferroni over every setting tested) qualify.

The chosen candidate is then refitted on the whole split. :class:`PolicySearch` (kind
``search``) keeps the chosen policy of every budget on the cross-validated frontier, so one
object traces a cost-quality curve in a report and serves one point of it.
"""

from llmtriage.policies.search.candidates import (
    FAMILIES,
    GROUPS,
    ROUTERS,
    agreement_cascades,
    candidates,
    ladders,
)
from llmtriage.policies.search.choice import SearchResult, choose, search
from llmtriage.policies.search.crossval import (
    OUTCOMES,
    CrossValidated,
    cross_validate,
    replay_outcomes,
)
from llmtriage.policies.search.objective import RESOURCES, Objective
from llmtriage.policies.search.policy import PolicySearch, best_ladder

__all__ = ["FAMILIES", "GROUPS", "OUTCOMES", "RESOURCES", "ROUTERS", "CrossValidated",
           "Objective", "PolicySearch", "SearchResult", "agreement_cascades", "best_ladder",
           "candidates", "choose", "cross_validate", "ladders", "replay_outcomes", "search"]

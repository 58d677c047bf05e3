"""How agents keep plasticity: interventions (plug-ins) and optimizers.

``crl.plasticity`` sees networks, optimizers and regime events, never environment
internals; it imports neither :mod:`crl.drift` nor :mod:`crl.run`.
"""

from crl.plasticity.agem import AGEM
from crl.plasticity.base import (
    INTERVENTIONS,
    Intervention,
    InterventionSet,
    attach,
    interventions_of,
    register_intervention,
)
from crl.plasticity.churn import CChain
from crl.plasticity.distill import PolicyDistill
from crl.plasticity.forgetting import EWC, MAS, L2Prev, SynapticIntelligence
from crl.plasticity.generative import GenerativeDistill
from crl.plasticity.hare import HareTortoise
from crl.plasticity.nap import NormalizeAndProject
from crl.plasticity.optimizers import OPTIMIZERS, make_optimizer_class
from crl.plasticity.packnet import PackNet
from crl.plasticity.regularisers import L2Init, OptimizerReset, Parseval, WeightClip
from crl.plasticity.resets import ReGraMa, SelfNormalizedResets
from crl.plasticity.units import ContinualBackprop, Injection, ReDo, Reset, ShrinkPerturb

__all__ = [
    "AGEM",
    "CChain",
    "INTERVENTIONS",
    "OPTIMIZERS",
    "ContinualBackprop",
    "EWC",
    "HareTortoise",
    "L2Init",
    "L2Prev",
    "MAS",
    "NormalizeAndProject",
    "OptimizerReset",
    "PackNet",
    "Parseval",
    "PolicyDistill",
    "WeightClip",
    "GenerativeDistill",
    "Injection",
    "ReDo",
    "ReGraMa",
    "Reset",
    "SelfNormalizedResets",
    "ShrinkPerturb",
    "SynapticIntelligence",
    "Intervention",
    "InterventionSet",
    "attach",
    "interventions_of",
    "make_optimizer_class",
    "register_intervention",
]

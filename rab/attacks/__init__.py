"""Backdoor attacks: the authors' triggers, other toolkits' triggers, and poisoning."""

from rab.attacks.poison import (
    BackdoorTestSet,
    PoisonResult,
    backdoor_test_set,
    label_map,
    poison_training_set,
    shift_permutation,
)
from rab.attacks.triggers import (
    AdditiveTrigger,
    BlendTrigger,
    PatchTrigger,
    Trigger,
    TriggerResult,
    additive,
    apply_trigger,
    badnets_patch,
    blended_image,
    blending,
    default_positions,
    four_pixel,
    make_trigger,
    one_pixel,
)

__all__ = [
    "AdditiveTrigger",
    "BackdoorTestSet",
    "BlendTrigger",
    "PatchTrigger",
    "PoisonResult",
    "Trigger",
    "TriggerResult",
    "additive",
    "apply_trigger",
    "backdoor_test_set",
    "badnets_patch",
    "blended_image",
    "blending",
    "default_positions",
    "four_pixel",
    "label_map",
    "make_trigger",
    "one_pixel",
    "poison_training_set",
    "shift_permutation",
]

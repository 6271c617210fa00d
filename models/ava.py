"""AVA action classes: the 80-class label map and the 60 classes LART predicts.

LART's AVA head has 60 outputs (``ava.predict_valid``): the 60 classes of the
ActivityNet 2018/2019 AVA evaluation. Head column ``j`` is taken to be the
``j``-th of those ids in ascending order. The mapping file the reference uses
(``ava_class_mapping.pkl`` / ``ava_valid_classes.npy``) is not available here,
so that order is an assumption; the ids themselves match the reference's
``ava_action_list_v2.1_for_activitynet_2018`` label map.
"""

from __future__ import annotations

# AVA v2.x action names, id = position + 1 (ids 1..80).
AVA_ACTIONS_80: tuple[str, ...] = (
    "bend/bow (at the waist)", "crawl", "crouch/kneel", "dance", "fall down", "get up", "jump/leap",
    "lie/sleep", "martial art", "run/jog", "sit", "stand", "swim", "walk", "answer phone", "brush teeth",
    "carry/hold (an object)", "catch (an object)", "chop", "climb (e.g., a mountain)", "clink glass",
    "close (e.g., a door, a box)", "cook", "cut", "dig", "dress/put on clothing", "drink",
    "drive (e.g., a car, a truck)", "eat", "enter", "exit", "extract", "fishing", "hit (an object)",
    "kick (an object)", "lift/pick up", "listen (e.g., to music)", "open (e.g., a window, a car door)", "paint",
    "play board game", "play musical instrument", "play with pets", "point to (an object)", "press",
    "pull (an object)", "push (an object)", "put down", "read", "ride (e.g., a bike, a car, a horse)",
    "row boat", "sail boat", "shoot", "shovel", "smoke", "stir", "take a photo", "text on/look at a cellphone",
    "throw", "touch (an object)", "turn (e.g., a screwdriver)", "watch (e.g., TV)", "work on a computer",
    "write", "fight/hit (a person)", "give/serve (an object) to (a person)", "grab (a person)", "hand clap",
    "hand shake", "hand wave", "hug (a person)", "kick (a person)", "kiss (a person)", "lift (a person)",
    "listen to (a person)", "play with kids", "push (another person)", "sing to (e.g., self, a person, a group)",
    "take (an object) from (a person)", "talk to (e.g., self, a person, a group)", "watch (a person)",
)

# The 60 evaluated ids, ascending: LART's head columns in this order.
AVA_EVAL_IDS: tuple[int, ...] = (
    1, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 17, 20, 22, 24, 26, 27,
    28, 29, 30, 34, 36, 37, 38, 41, 43, 45, 46, 47, 48, 49, 51, 52, 54, 56, 57, 58,
    59, 60, 61, 62, 63, 64, 65, 66, 67, 68, 69, 70, 72, 73, 74, 76, 77, 78, 79, 80,
)
AVA_EVAL_NAMES: tuple[str, ...] = tuple(AVA_ACTIONS_80[i - 1] for i in AVA_EVAL_IDS)

assert len(AVA_ACTIONS_80) == 80 and len(AVA_EVAL_IDS) == 60


def ava_name(ava_id: int) -> str:
    """Name of an AVA action id (1..80)."""
    if not 1 <= ava_id <= 80:
        raise ValueError(f"AVA action ids are 1..80, got {ava_id}")
    return AVA_ACTIONS_80[ava_id - 1]

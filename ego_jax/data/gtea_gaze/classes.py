"""GTEA Gaze+'s 44 action classes (Li, Fathi & Rehg, CVPR 2015), as listed by hassony2's GTEA Gaze+ loader
(`cvpr_labels`), sorted; a label is the index in this list. A class is `<verb>_<object>_<object>...` after merging
objects (OBJECT_GROUPS) and removing spaces from the verb."""

CLASSES = tuple(
    sorted(
        (
            "open_fridge",
            "close_fridge",
            "put_cupPlateBowl",
            "put_spoonForkKnife_cupPlateBowl",
            "take_spoonForkKnife_cupPlateBowl",
            "take_cupPlateBowl",
            "take_spoonForkKnife",
            "put_lettuce_cupPlateBowl",
            "read_recipe",
            "take_plastic_spatula",
            "open_freezer",
            "close_freezer",
            "put_plastic_spatula",
            "cut_tomato_spoonForkKnife",
            "put_spoonForkKnife",
            "take_tomato_cupPlateBowl",
            "turnon_tap",
            "turnoff_tap",
            "take_cupPlateBowl_plate_container",
            "turnoff_burner",
            "turnon_burner",
            "cut_pepper_spoonForkKnife",
            "put_tomato_cupPlateBowl",
            "put_milk_container",
            "put_oil_container",
            "take_oil_container",
            "close_oil_container",
            "open_oil_container",
            "take_lettuce_container",
            "take_milk_container",
            "open_fridge_drawer",
            "put_lettuce_container",
            "close_fridge_drawer",
            "compress_sandwich",
            "pour_oil_oil_container_skillet",
            "take_bread_bread_container",
            "cut_mushroom_spoonForkKnife",
            "put_bread_cupPlateBowl",
            "put_honey_container",
            "take_honey_container",
            "open_microwave",
            "crack_egg_cupPlateBowl",
            "open_bread_container",
            "open_honey_container",
        )
    )
)
OBJECT_GROUPS = {
    "fork": "spoonForkKnife",
    "knife": "spoonForkKnife",
    "spoon": "spoonForkKnife",
    "cup": "cupPlateBowl",
    "plate": "cupPlateBowl",
    "bowl": "cupPlateBowl",
}


def class_of(verb: str, objects) -> str:
    """('turn on', ('tap',)) -> 'turnon_tap'; ('take', ('fork', 'bowl')) -> 'take_spoonForkKnife_cupPlateBowl'."""
    return "_".join((verb.replace(" ", ""), *(OBJECT_GROUPS.get(o, o) for o in objects)))

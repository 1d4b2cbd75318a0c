"""Counts as words, English plurals and articles, and IPR relabels of open-vocabulary objects on
hand-made detections."""

from __future__ import annotations

import pytest

from atelier.tools.relabel import relabel_objects
from atelier.tools.detection import Detection
from atelier.tools.phrases import count_phrase, describe_objects, describe_relation, indefinite_article, number_word, plural


def det(label, cx, cy, r=5):
    return Detection(label=label, box=(cx - r, cy - r, cx + r, cy + r), score=0.9)


def test_objects_as_a_caption():
    assert describe_objects([("dog", 2), ("cat", 1)]) == "two dogs and a cat"
    assert describe_objects([("person", 3)]) == "three people"
    assert describe_objects([("giraffe", 1)]) == "a giraffe"
    assert describe_objects([("dog", 2), ("cat", 1), ("apple", 1)]) == "two dogs, a cat and an apple"
    assert describe_relation(("person", 3), "left of", ("bus", 2)) == "three people to the left of two buses"
    assert count_phrase("car", 12) == "twelve cars" and number_word(21) == "21"


@pytest.mark.parametrize(
    "one, many",
    [("dog", "dogs"), ("person", "people"), ("mouse", "mice"), ("sheep", "sheep"), ("fish", "fish"), ("bus", "buses"),
     ("box", "boxes"), ("knife", "knives"), ("child", "children"), ("wine glass", "wine glasses"), ("couch", "couches"),
     ("butterfly", "butterflies"), ("toy", "toys"), ("traffic light", "traffic lights"), ("tomato", "tomatoes"),
     ("photo", "photos"), ("woman", "women"), ("leaf", "leaves")],
)
def test_plurals(one, many):
    assert plural(one) == many


@pytest.mark.parametrize(
    "name, article",
    [("apple", "an"), ("elephant", "an"), ("umbrella", "an"), ("orange", "an"), ("dog", "a"), ("unicorn", "a"),
     ("hour glass", "an"), ("horse", "a"), ("hot dog", "a"), ("european car", "a")],
)
def test_articles(name, article):
    assert indefinite_article(name) == article


# name -> (one, two or three): COCO's 80 classes, common LVIS names, pluralia tantum, irregular
# plurals and articles by sound. IPR's relabelled prompts are training text: every line is English.
CAPTIONS = {
    # COCO's 80 classes
    "person": ("a person", "three people"), "bicycle": ("a bicycle", "two bicycles"), "car": ("a car", "two cars"),
    "motorcycle": ("a motorcycle", "two motorcycles"), "airplane": ("an airplane", "two airplanes"), "bus": ("a bus", "two buses"),
    "train": ("a train", "two trains"), "truck": ("a truck", "two trucks"), "boat": ("a boat", "two boats"),
    "traffic light": ("a traffic light", "two traffic lights"), "fire hydrant": ("a fire hydrant", "two fire hydrants"),
    "stop sign": ("a stop sign", "two stop signs"), "parking meter": ("a parking meter", "two parking meters"),
    "bench": ("a bench", "two benches"), "bird": ("a bird", "two birds"), "cat": ("a cat", "two cats"), "dog": ("a dog", "two dogs"),
    "horse": ("a horse", "two horses"), "sheep": ("a sheep", "three sheep"), "cow": ("a cow", "two cows"),
    "elephant": ("an elephant", "two elephants"), "bear": ("a bear", "two bears"), "zebra": ("a zebra", "two zebras"),
    "giraffe": ("a giraffe", "two giraffes"), "backpack": ("a backpack", "two backpacks"), "umbrella": ("an umbrella", "two umbrellas"),
    "handbag": ("a handbag", "two handbags"), "tie": ("a tie", "two ties"), "suitcase": ("a suitcase", "two suitcases"),
    "frisbee": ("a frisbee", "two frisbees"), "skis": ("a pair of skis", "two pairs of skis"),
    "snowboard": ("a snowboard", "two snowboards"), "sports ball": ("a sports ball", "two sports balls"), "kite": ("a kite", "two kites"),
    "baseball bat": ("a baseball bat", "two baseball bats"), "baseball glove": ("a baseball glove", "two baseball gloves"),
    "skateboard": ("a skateboard", "two skateboards"), "surfboard": ("a surfboard", "two surfboards"),
    "tennis racket": ("a tennis racket", "two tennis rackets"), "bottle": ("a bottle", "two bottles"),
    "wine glass": ("a wine glass", "two wine glasses"), "cup": ("a cup", "two cups"), "fork": ("a fork", "two forks"),
    "knife": ("a knife", "two knives"), "spoon": ("a spoon", "two spoons"), "bowl": ("a bowl", "two bowls"),
    "banana": ("a banana", "two bananas"), "apple": ("an apple", "two apples"), "sandwich": ("a sandwich", "two sandwiches"),
    "orange": ("an orange", "two oranges"), "broccoli": ("a broccoli", "two broccolis"), "carrot": ("a carrot", "two carrots"),
    "hot dog": ("a hot dog", "two hot dogs"), "pizza": ("a pizza", "two pizzas"), "donut": ("a donut", "two donuts"),
    "cake": ("a cake", "two cakes"), "chair": ("a chair", "two chairs"), "couch": ("a couch", "two couches"),
    "potted plant": ("a potted plant", "two potted plants"), "bed": ("a bed", "two beds"), "dining table": ("a dining table", "two dining tables"),
    "toilet": ("a toilet", "two toilets"), "tv": ("a tv", "two tvs"), "laptop": ("a laptop", "two laptops"), "mouse": ("a mouse", "three mice"),
    "remote": ("a remote", "two remotes"), "keyboard": ("a keyboard", "two keyboards"), "cell phone": ("a cell phone", "two cell phones"),
    "microwave": ("a microwave", "two microwaves"), "oven": ("an oven", "two ovens"), "toaster": ("a toaster", "two toasters"),
    "sink": ("a sink", "two sinks"), "refrigerator": ("a refrigerator", "two refrigerators"), "book": ("a book", "two books"),
    "clock": ("a clock", "two clocks"), "vase": ("a vase", "two vases"), "scissors": ("a pair of scissors", "two pairs of scissors"),
    "teddy bear": ("a teddy bear", "two teddy bears"), "hair drier": ("a hair drier", "two hair driers"),
    "toothbrush": ("a toothbrush", "two toothbrushes"),
    # pluralia tantum and things that come in pairs
    "sunglasses": ("a pair of sunglasses", "two pairs of sunglasses"), "headphones": ("a pair of headphones", "three pairs of headphones"),
    "jeans": ("a pair of jeans", "two pairs of jeans"), "pants": ("a pair of pants", "two pairs of pants"),
    "glasses": ("a pair of glasses", "two pairs of glasses"), "goggles": ("a pair of goggles", "two pairs of goggles"),
    "binoculars": ("a pair of binoculars", "two pairs of binoculars"), "shorts": ("a pair of shorts", "two pairs of shorts"),
    "trousers": ("a pair of trousers", "two pairs of trousers"), "tongs": ("a pair of tongs", "two pairs of tongs"),
    "pliers": ("a pair of pliers", "two pairs of pliers"), "gloves": ("a pair of gloves", "two pairs of gloves"),
    "socks": ("a pair of socks", "two pairs of socks"), "chopsticks": ("a pair of chopsticks", "two pairs of chopsticks"),
    "ski boots": ("a pair of ski boots", "two pairs of ski boots"),
    # irregular plurals
    "snowman": ("a snowman", "two snowmen"), "policeman": ("a policeman", "two policemen"), "fireman": ("a fireman", "two firemen"),
    "man": ("a man", "two men"), "woman": ("a woman", "three women"), "child": ("a child", "two children"), "goose": ("a goose", "two geese"),
    "glass": ("a glass", "two glasses"), "deer": ("a deer", "two deer"), "fish": ("a fish", "two fish"), "moose": ("a moose", "two moose"),
    "wolf": ("a wolf", "two wolves"), "leaf": ("a leaf", "two leaves"), "shelf": ("a shelf", "two shelves"), "thief": ("a thief", "two thieves"),
    "box": ("a box", "two boxes"), "fox": ("a fox", "two foxes"), "ox": ("an ox", "two oxen"), "tooth": ("a tooth", "two teeth"),
    "butterfly": ("a butterfly", "two butterflies"), "toy": ("a toy", "two toys"), "tomato": ("a tomato", "two tomatoes"),
    "potato": ("a potato", "two potatoes"), "photo": ("a photo", "two photos"), "piano": ("a piano", "two pianos"),
    "cactus": ("a cactus", "two cacti"), "aircraft": ("an aircraft", "two aircraft"), "waltz": ("a waltz", "two waltzes"),
    "ski": ("a ski", "two skis"), "ski pole": ("a ski pole", "two ski poles"), "human": ("a human", "two humans"),
    # articles by sound
    "ukulele": ("a ukulele", "two ukuleles"), "urinal": ("a urinal", "two urinals"), "unicorn": ("a unicorn", "two unicorns"),
    "uniform": ("a uniform", "two uniforms"), "unicycle": ("a unicycle", "two unicycles"), "utensil": ("a utensil", "two utensils"),
    "hour": ("an hour", "two hours"), "hourglass": ("an hourglass", "two hourglasses"), "heir": ("an heir", "two heirs"),
    "one-way sign": ("a one-way sign", "two one-way signs"), "ewe": ("a ewe", "two ewes"), "euro": ("a euro", "two euros"),
    "eucalyptus": ("a eucalyptus", "two eucalyptuses"), "horse cart": ("a horse cart", "two horse carts"), "hot-air balloon":
    ("a hot-air balloon", "two hot-air balloons"), "owl": ("an owl", "two owls"), "ostrich": ("an ostrich", "two ostriches"),
    "onion": ("an onion", "two onions"), "umpire": ("an umpire", "two umpires"), "urn": ("an urn", "two urns"), "usher": ("an usher", "two ushers"),
    "MRI": ("an MRI", "two MRIs"), "mri scanner": ("an mri scanner", "two mri scanners"),
    "UFO": ("a UFO", "two UFOs"), "atm": ("an atm", "two atms"), "suv": ("an suv", "two suvs"), "x-ray": ("an x-ray", "two x-rays"),
    "hdmi cable": ("an hdmi cable", "two hdmi cables"), "8-ball": ("an 8-ball", "two 8-balls"), "yo-yo": ("a yo-yo", "two yo-yos"),
}


@pytest.mark.parametrize("name", CAPTIONS)
def test_count_phrases_are_english(name):
    one, more = CAPTIONS[name]
    count = 3 if more.startswith("three") else 2
    assert count_phrase(name, 1) == one and count_phrase(name, count) == more


def test_pairs_and_irregulars_in_captions_and_relations():
    assert describe_objects([("scissors", 2), ("skis", 1)]) == "two pairs of scissors and a pair of skis"
    assert describe_relation(("policeman", 2), "left of", ("snowman", 3)) == "two policemen to the left of three snowmen"
    assert describe_relation(("ukulele", 1), "above", ("urinal", 1)) == "a ukulele above a urinal"
    assert plural("scissors") == "scissors" and plural("sunglasses") == "sunglasses" and plural("snowman") == "snowmen"
    assert indefinite_article("ukulele") == "a" and indefinite_article("hour") == "an" and indefinite_article("scissors") == "a"


def test_wrong_count_describes_what_was_found():
    dets = [det("dog", 10, 10), det("dog", 40, 10), det("cat", 70, 10)]
    assert relabel_objects([("dog", 1), ("cat", 1)], "left of", dets) == "two dogs and a cat"
    # A missing prompt object is left out; the found ones keep prompt order.
    assert relabel_objects([("cat", 1), ("person", 2)], None, [det("person", 5, 5)]) == "a person"
    assert relabel_objects([("person", 2)], None, [det("person", 5, 5), det("person", 20, 5), det("person", 40, 5)]) == "three people"


def test_wrong_relation_states_the_relation_seen():
    # Dog right of the cat: the prompt's axis first.
    dets = [det("dog", 70, 30), det("cat", 10, 30)]
    assert relabel_objects([("dog", 1), ("cat", 1)], "left of", dets) == "a dog to the right of a cat"
    # Same x: left/right cannot be told, above/below can.
    dets = [det("dog", 30, 10), det("cat", 30, 60)]
    assert relabel_objects([("dog", 1), ("cat", 1)], "left of", dets) == "a dog above a cat"
    assert relabel_objects([("apple", 1), ("person", 2)], "above", [det("apple", 10, 80), det("person", 5, 10), det("person", 50, 10)]) == (
        "an apple below two people"
    )
    # Same centres: no side can be told, the objects alone are still true.
    assert relabel_objects([("dog", 1), ("cat", 1)], "left of", [det("dog", 30, 30), det("cat", 30, 30)]) == "a dog and a cat"


def test_right_or_unsayable_is_none():
    dets = [det("dog", 10, 30), det("cat", 70, 30)]
    assert relabel_objects([("dog", 1), ("cat", 1)], "left of", dets) is None
    assert relabel_objects([("dog", 1), ("cat", 1)], None, dets) is None
    assert relabel_objects([("dog", 1)], None, []) is None  # nothing found: nothing to say
    with pytest.raises(ValueError, match="exactly two objects"):
        relabel_objects([("dog", 1)], "left of", dets)

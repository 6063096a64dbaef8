"""RAG retrieval data (issue 19, W9/W10): a seeded fictional encyclopedia, questions with known sources, Zipf streams.

`rag_corpus` writes N short documents (60-150 words, one embedding chunk each), each about one uniquely
named entity of one of ten kinds (towns, rivers, inventors, festivals, ships, mountains, instruments,
companies, birds, castles). Documents of one kind share their sentence shapes and differ in their facts
(a year, a person, a place, a colour, a product...): retrieval has to find the right one among look-alikes
by the entity's name. Every name (entities, people, places) is drawn from syllables, so names are unusual
words, and each name is used once in the whole corpus (no name contains another).

`rag_questions` asks one question per chosen document about one of its facts: the question names the
entity, the answer string appears in the document, and three paraphrases say the same with other words
(for the semantic cache). Paraphrases keep the entity's reference and the fact's key word and change the
rest, as a user rephrasing would: with all-MiniLM-L6-v2 a question and its paraphrases score a cosine
of about 0.97 (median; >= 0.9 for ~97%), while the same wording about another entity of the kind scores
about 0.69 (> 0.9 for < 0.5%), so one threshold separates them; retrieval by the whole-document
embedding finds the source first for ~100% of questions and paraphrases (seeds 0-2, 200 questions).

`zipf_question_stream` draws a W10 stream: questions by Zipf rank, each draw in its original wording or
one of its paraphrases, uniformly. Everything is a pure function of the seed
(random.Random), so every server and every run sees the same texts.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import accumulate

DEFAULT_NUM_DOCUMENTS = 240
MIN_WORDS, MAX_WORDS = 60, 150


@dataclass(frozen=True)
class Document:
    id: str
    text: str
    metadata: dict = field(default_factory=dict)              # {"kind": ..., "name": ...}: sent with the text
    facts: tuple[tuple[str, str], ...] = ()                   # (fact, answer) pairs the questions ask about


@dataclass(frozen=True)
class Question:
    text: str
    answer: str                  # appears verbatim in the source document
    document_id: str
    paraphrases: tuple[str, ...]  # same meaning, other words


# --- names -------------------------------------------------------------------------------------------

_ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "gr", "kr", "tr",
           "th", "sh", "st", "sk", "q", "x", "y", "w", "h", "j", "fl", "pl", "gl")
_VOWELS = ("a", "e", "i", "o", "u", "ae", "ou", "ei", "y", "ai", "oa", "io")
_CODAS = ("n", "r", "l", "s", "x", "k", "m", "th", "nd", "rk", "sk", "z", "ck", "rn", "lt", "sh")   # last syllable only
_NUM_STARTS = len(_ONSETS) * len(_VOWELS)


class _Names:
    """Draws syllable names, each unique and neither containing nor contained in another (per corpus).
    Entity names also start with a syllable no other entity name starts with (while there are such left):
    the start of a made-up word weighs most in its embedding, so look-alike starts make look-alike questions."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.used: list[str] = []
        self.starts: set[str] = set()

    def draw(self, syllables: int, distinct_start: bool = False) -> str:
        while True:
            first = self.rng.choice(_ONSETS) + self.rng.choice(_VOWELS)
            word = first + "".join(self.rng.choice(_ONSETS) + self.rng.choice(_VOWELS) for _ in range(syllables - 1))
            word += self.rng.choice(_CODAS)
            if distinct_start and first in self.starts and len(self.starts) < _NUM_STARTS:
                continue
            if not 4 <= len(word) <= 12 or any(word in u or u in word for u in self.used):
                continue
            self.used.append(word)
            if distinct_start:
                self.starts.add(first)
            return word.capitalize()

    def person(self) -> str:
        return f"{self.draw(2)} {self.draw(self.rng.choice((2, 3)))}"


# --- fact values ---------------------------------------------------------------------------------------

_COLOURS = ("crimson", "ochre", "teal", "saffron", "indigo", "scarlet", "olive green", "amber", "violet",
            "turquoise", "maroon", "silver grey", "lemon yellow", "cobalt blue", "rose pink", "charcoal black",
            "emerald green", "copper orange", "ivory white", "plum purple")
_PRODUCTS = ("copper kettles", "wool blankets", "glass beads", "clay roof tiles", "pocket watches", "linen sails",
             "leather saddles", "smoked cheese", "rope ladders", "iron nails", "paper lanterns", "oak barrels",
             "tin whistles", "silk scarves", "brass compasses", "wax candles", "felt hats", "stone mortars",
             "herbal soap", "fishing nets", "honey wine", "walnut oil", "clay pipes", "sheep bells")
_INVENTIONS = ("a steam-powered loom", "a folding telescope", "a water clock", "a mechanical plough",
               "a pedal-driven lathe", "a brass diving helmet", "a clockwork fan", "a wind-powered pump",
               "a printing press for maps", "a glass lighthouse lens", "a spring-loaded lock",
               "a hand-cranked flour mill", "a copper rain gauge", "a mirror signal lamp",
               "a wooden calculating machine", "a tide-powered saw", "a pneumatic message tube", "a candle-timed alarm")
_MATERIALS = ("walnut wood", "cherry wood", "bamboo", "maple wood", "ebony", "spruce", "bone", "horn", "bronze",
              "pear wood", "cedar", "birch bark")
_DISHES = ("roasted chestnuts", "plum dumplings", "fried river fish", "honey bread", "barley soup", "spiced lentils",
           "goat cheese pies", "apple fritters", "smoked eel", "poppy seed rolls", "mushroom stew",
           "pickled herring", "sweet corn cakes", "lamb skewers")
_FISH = ("silver trout", "spotted pike", "golden carp", "striped perch", "blue salmon", "freshwater eel",
         "river bream", "speckled grayling", "black catfish", "pale sturgeon")
_CARGO = ("salt", "timber", "tea", "coal", "grain", "wool", "spices", "marble", "copper ore", "olive oil",
          "tobacco", "cotton", "wine", "dried fish")
_MINERALS = ("granite", "basalt", "limestone", "slate", "marble", "sandstone", "quartz", "obsidian", "gneiss",
             "dolomite")
_BIRD_FOODS = ("beetles", "berries", "small fish", "pine seeds", "snails", "grasshoppers", "moths", "acorns",
               "water weeds", "spiders")


# A fact's value drawer: (rng, names) -> the answer string, as it appears in the document.
Draw = Callable[[random.Random, _Names], str]


def _year(lo: int, hi: int) -> Draw:
    return lambda rng, names: str(rng.randint(lo, hi))


def _number(lo: int, hi: int, step: int = 1) -> Draw:
    return lambda rng, names: str(rng.randrange(lo, hi + 1, step))


def _pick(pool: tuple[str, ...]) -> Draw:
    return lambda rng, names: rng.choice(pool)


def _person(rng: random.Random, names: _Names) -> str:
    return names.person()


def _place(rng: random.Random, names: _Names) -> str:
    return names.draw(rng.choice((2, 3)))


@dataclass(frozen=True)
class _Fact:
    name: str
    draw: Draw
    statements: tuple[str, ...]    # document sentences ({n}: the entity, {v}: the value); one is used
    questions: tuple[str, ...]     # question, then three paraphrases ({r}/{R}: the entity's reference, capitalized)


@dataclass(frozen=True)
class _Kind:
    name: str
    refs: tuple[str, ...]          # how a question refers to the entity ({n}: its name): one, in all its wordings
    intros: tuple[str, ...]
    facts: tuple[_Fact, ...]
    fillers: tuple[str, ...]       # extra sentences alike for every entity of the kind (no facts)


_KINDS: tuple[_Kind, ...] = (
    _Kind(
        "town", ("the town of {n}", "the town {n}", "{n} town", "the town called {n}"),
        ("{n} is a small market town in the northern hills of the encyclopedia's fictional country.",
         "{n} is a quiet hill town known to travellers for its steep lanes and busy market square."),
        (_Fact("founding_year", _year(1120, 1890),
               ("The town was founded in {v} by a group of settlers from the coast.",
                "{n} was founded in {v}, when the first houses were built around the well."),
               ("When was {r} founded?", "In what year was {r} founded?",
                "What year was {r} established?", "{R} was founded in which year?")),
         _Fact("founder", _person,
               ("Its first mayor, {v}, drew up the plan of the streets.",
                "The settlers were led by {v}, who became the first mayor."),
               ("Who was the first mayor of {r}?", "Who served as the first mayor of {r}?",
                "Which person was the first mayor of {r}?", "The first mayor of {r} was who?")),
         _Fact("product", _pick(_PRODUCTS),
               ("Today {n} is best known for making {v}, sold at its weekly market.",
                "The workshops of {n} are famous for their {v}."),
               ("What is {r} best known for making?", "What is {r} best known for producing?",
                "Which goods is {r} best known for making?", "{R} is best known for making what?")),
         _Fact("colour", _pick(_COLOURS),
               ("The town flag is {v} with a white tower in the middle.",
                "The flag of {n} is {v}, the colour of its old guild."),
               ("What colour is the flag of {r}?", "Which colour is the flag of {r}?",
                "The flag of {r} is what colour?", "What is the colour of the flag of {r}?")),
         _Fact("neighbour", _place,
               ("The nearest neighbouring town is {v}, half a day's walk to the east.",
                "Its closest neighbour is the village of {v}, across the valley."),
               ("Which town is the nearest neighbour of {r}?", "What is the nearest neighbouring town of {r}?",
                "Name the nearest neighbour of {r}.", "The nearest neighbour of {r} is which town?"))),
        ("Its market square is surrounded by old stone houses with wooden balconies.",
         "The town has a small library, two bakeries and a school.",
         "Visitors often stop there on the road between the hills and the coast.",
         "In winter the lanes are quiet and most workshops close early.")),
    _Kind(
        "river", ("the {n} river", "the river {n}", "the {n}", "the river called {n}"),
        ("The {n} is a river that winds through farmland and forest before it reaches open water.",
         "The {n} is a long, slow river crossing the lowlands of the fictional country."),
        (_Fact("length", _number(40, 980),
               ("The river is {v} kilometres long from its source to its mouth.",
                "The {n} runs for {v} kilometres in total."),
               ("How long is {r}?", "What is the length of {r}?",
                "How long is {r} in kilometres?", "{R} is how long?")),
         _Fact("source", _place,
               ("It rises on the slopes of a hill called {v}.",
                "Its source is a spring on the hill of {v}."),
               ("Where does {r} have its source?", "Where is the source of {r}?",
                "What is the source of {r}?", "The source of {r} is where?")),
         _Fact("fish", _pick(_FISH),
               ("Fishermen on the {n} mostly catch {v}.",
                "The most common fish in its water is the {v}."),
               ("Which fish is most common in {r}?", "What fish is most common in {r}?",
                "What is the most common fish in {r}?", "The most common fish in {r} is which?")),
         _Fact("bridge_builder", _person,
               ("Its oldest bridge was built by the engineer {v}.",
                "The engineer {v} built the first bridge across it."),
               ("Who built the oldest bridge over {r}?", "Which engineer built the oldest bridge over {r}?",
                "Who was the builder of the oldest bridge over {r}?", "The oldest bridge over {r} was built by whom?")),
         _Fact("colour", _pick(_COLOURS),
               ("After heavy rain its water turns {v}.",
                "Its water looks {v} after a storm because of the clay in its bed."),
               ("What colour does the water of {r} turn after rain?", "After heavy rain, what colour does {r} turn?",
                "What colour is the water of {r} after rain?", "The water of {r} turns what colour after rain?"))),
        ("Willows grow along most of its banks.",
         "In spring the river floods the meadows on both sides.",
         "Small boats carry goods along its lower course.",
         "Several mills once stood on its banks.")),
    _Kind(
        "inventor", ("the inventor {n}", "{n}", "inventor {n}", "the inventor named {n}"),
        ("{n} was an inventor and craftsman remembered for practical machines.",
         "{n} was a self-taught inventor whose workshop attracted many apprentices."),
        (_Fact("birth_year", _year(1450, 1880),
               ("{n} was born in {v} in a family of carpenters.",
                "Born in {v}, {n} learned the trade of a clockmaker as a child."),
               ("When was {r} born?", "In what year was {r} born?",
                "What year was {r} born in?", "{R} was born in which year?")),
         _Fact("invention", _pick(_INVENTIONS),
               ("The most famous invention of {n} is {v}.",
                "{n} is best remembered for building {v}."),
               ("What is {r} most famous for inventing?", "What was the most famous invention of {r}?",
                "Which invention is {r} most famous for?", "{R} is most famous for inventing what?")),
         _Fact("hometown", _place,
               ("The workshop stood in the town of {v}.",
                "{n} lived and worked in the town of {v}."),
               ("In which town did {r} work?", "Which town did {r} live and work in?",
                "Where did {r} work?", "{R} worked in which town?")),
         _Fact("apprentice", _person,
               ("The best-known apprentice of {n} was {v}.",
                "{v} was an apprentice in the workshop and later continued the work."),
               ("Who was the apprentice of {r}?", "Who was the best-known apprentice of {r}?",
                "Name the apprentice of {r}.", "{R} had which apprentice?")),
         _Fact("material", _pick(_MATERIALS),
               ("{n} preferred to build with {v}.",
                "Most of the machines were made of {v}."),
               ("Which material did {r} prefer to build with?", "What material did {r} prefer for building?",
                "What did {r} prefer to build with?", "{R} preferred to build with which material?"))),
        ("Several of the machines survive in museums today.",
         "The workshop kept careful notebooks of every experiment.",
         "Not every design worked, and some were never finished.",
         "Letters to other craftsmen describe long nights of work.")),
    _Kind(
        "festival", ("the {n} festival", "the festival of {n}", "the {n} celebration", "the festival called {n}"),
        ("The {n} festival is a yearly celebration with music, dancing and long tables in the street.",
         "The {n} is a summer festival that fills the streets with music and food for three days."),
        (_Fact("first_held", _year(1300, 1950),
               ("The festival was first held in {v}.",
                "It has been celebrated every year since {v}."),
               ("When was {r} first held?", "In what year was {r} first held?",
                "What year was {r} held for the first time?", "{R} was first held in which year?")),
         _Fact("host_town", _place,
               ("It takes place in the town of {v}.",
                "The town of {v} hosts the festival."),
               ("In which town does {r} take place?", "Which town hosts {r}?",
                "Where does {r} take place?", "{R} takes place in which town?")),
         _Fact("dish", _pick(_DISHES),
               ("The traditional food of the {n} is {v}.",
                "Stalls at the festival serve {v}, its traditional dish."),
               ("What is the traditional food of {r}?", "Which traditional dish is served at {r}?",
                "What food is traditional at {r}?", "The traditional food of {r} is what?")),
         _Fact("colour", _pick(_COLOURS),
               ("Dancers wear {v} ribbons on the last evening.",
                "On the last evening everyone wears something {v}."),
               ("What colour do the dancers wear at {r}?", "Which colour do dancers wear at {r}?",
                "At {r}, what colour do the dancers wear?", "The dancers at {r} wear what colour?")),
         _Fact("founder", _person,
               ("It was started by the musician {v}.",
                "The musician {v} organised the first celebration."),
               ("Who started {r}?", "Which musician started {r}?",
                "Who was the founder of {r}?", "{R} was started by whom?"))),
        ("Bands play from noon until late at night.",
         "Children take part in a parade on the first morning.",
         "Visitors come from the surrounding villages.",
         "The streets are decorated with flags and lanterns.")),
    _Kind(
        "ship", ("the ship {n}", "the {n}", "the vessel {n}", "the ship called {n}"),
        ("The {n} was a three-masted merchant ship that sailed the northern trade routes.",
         "The {n} was a sturdy cargo ship known in many harbours of the fictional coast."),
        (_Fact("launch_year", _year(1500, 1900),
               ("The ship was launched in {v}.",
                "The {n} was launched in {v} after two years of building."),
               ("When was {r} launched?", "In what year was {r} launched?",
                "What year was {r} launched?", "{R} was launched in which year?")),
         _Fact("captain", _person,
               ("Its most famous captain was {v}.",
                "For most of its voyages it was commanded by captain {v}."),
               ("Who was the captain of {r}?", "Who was the most famous captain of {r}?",
                "Which captain commanded {r}?", "The captain of {r} was who?")),
         _Fact("home_port", _place,
               ("Its home port was the harbour town of {v}.",
                "The ship was registered in the port of {v}."),
               ("What was the home port of {r}?", "Which port was the home port of {r}?",
                "Where was the home port of {r}?", "The home port of {r} was which town?")),
         _Fact("cargo", _pick(_CARGO),
               ("It mostly carried {v}.",
                "Its holds were usually full of {v}."),
               ("What cargo did {r} mostly carry?", "What did {r} mostly carry?",
                "Which cargo did {r} usually carry?", "{R} mostly carried what cargo?")),
         _Fact("colour", _pick(_COLOURS),
               ("The hull of the {n} was painted {v}.",
                "Its hull was {v}, easy to spot from the shore."),
               ("What colour was the hull of {r}?", "Which colour was the hull of {r} painted?",
                "The hull of {r} was what colour?", "What was the colour of the hull of {r}?"))),
        ("The crew numbered about thirty sailors.",
         "Storms damaged it more than once, but it was always repaired.",
         "A model of the ship is kept in a harbour museum.",
         "Its logbooks record many long voyages.")),
    _Kind(
        "mountain", ("Mount {n}", "the mountain {n}", "the {n} mountain", "the mountain called {n}"),
        ("Mount {n} is a high peak in the eastern range of the fictional country.",
         "Mount {n} is a rocky mountain with snow on its summit for most of the year."),
        (_Fact("height", _number(1200, 6900),
               ("The summit is {v} metres above sea level.",
                "Mount {n} rises to a height of {v} metres."),
               ("How high is {r}?", "What is the height of {r}?",
                "How many metres high is {r}?", "{R} is how high?")),
         _Fact("first_ascent", _year(1700, 1960),
               ("It was first climbed in {v}.",
                "The first successful ascent was made in {v}."),
               ("When was {r} first climbed?", "In what year was {r} first climbed?",
                "What year was the first ascent of {r}?", "{R} was first climbed in which year?")),
         _Fact("climber", _person,
               ("The first climber to reach the top was {v}.",
                "{v} led the first party to the summit."),
               ("Who first climbed {r}?", "Who was the first to climb {r}?",
                "Which climber first reached the top of {r}?", "{R} was first climbed by whom?")),
         _Fact("valley", _place,
               ("At its foot lies the valley of {v}.",
                "The valley of {v} lies below its northern face."),
               ("Which valley lies at the foot of {r}?", "What valley is at the foot of {r}?",
                "Name the valley at the foot of {r}.", "At the foot of {r} lies which valley?")),
         _Fact("rock", _pick(_MINERALS),
               ("The mountain is made mostly of {v}.",
                "Its rock is mostly {v}."),
               ("What rock is {r} made of?", "Which rock is {r} mostly made of?",
                "What kind of rock forms {r}?", "{R} is made of what rock?"))),
        ("Its slopes are covered with pine forest below the tree line.",
         "Climbers use a hut halfway up the southern ridge.",
         "On clear days it can be seen from far away.",
         "Goats graze on its lower meadows in summer.")),
    _Kind(
        "instrument", ("the {n} instrument", "the instrument {n}", "the {n}",
                       "the instrument called {n}"),
        ("The {n} is a folk string instrument played at weddings and village dances.",
         "The {n} is a plucked string instrument with a round body and a long neck."),
        (_Fact("invented", _year(1200, 1850),
               ("The {n} was first built in {v}.",
                "The oldest known {n} dates from {v}."),
               ("When was {r} first built?", "In what year was {r} first built?",
                "What year was {r} first built?", "{R} was first built in which year?")),
         _Fact("maker", _person,
               ("Its first maker was the craftsman {v}.",
                "The craftsman {v} is credited with the design."),
               ("Who first made {r}?", "Which craftsman first made {r}?",
                "Who was the first maker of {r}?", "{R} was first made by whom?")),
         _Fact("strings", _number(3, 24),
               ("It has {v} strings.",
                "A standard {n} is strung with {v} strings."),
               ("How many strings does {r} have?", "What is the number of strings on {r}?",
                "How many strings are on {r}?", "{R} has how many strings?")),
         _Fact("material", _pick(_MATERIALS),
               ("The body is carved from {v}.",
                "Its body is made of {v}."),
               ("What is the body of {r} made of?", "Which material is the body of {r} made of?",
                "What material is the body of {r} carved from?", "The body of {r} is made of what?")),
         _Fact("region", _place,
               ("It comes from the region of {v}.",
                "It is played mostly in the region of {v}, where it originated."),
               ("Which region does {r} come from?", "What region does {r} come from?",
                "Where does {r} come from?", "{R} comes from which region?"))),
        ("It is usually played sitting down, resting on the knee.",
         "Its sound is bright and carries well outdoors.",
         "Players often learn it from older relatives.",
         "Songs for it are passed on by ear.")),
    _Kind(
        "company", ("the {n} company", "the company {n}", "{n}", "the company called {n}"),
        ("{n} is a family-owned company that sells its goods across the fictional country.",
         "{n} is a trading company that grew from a single shop into a large business."),
        (_Fact("founding_year", _year(1600, 1990),
               ("The company was founded in {v}.",
                "{n} was founded in {v} in a rented workshop."),
               ("When was {r} founded?", "In what year was {r} founded?",
                "What year was {r} established?", "{R} was founded in which year?")),
         _Fact("founder", _person,
               ("It was founded by {v}.",
                "Its founder, {v}, ran it for forty years."),
               ("Who founded {r}?", "Who is the founder of {r}?",
                "Which person founded {r}?", "{R} was founded by whom?")),
         _Fact("product", _pick(_PRODUCTS),
               ("Its main product is {v}.",
                "{n} mostly makes {v}."),
               ("What is the main product of {r}?", "Which is the main product of {r}?",
                "Which product does {r} mostly make?", "The main product of {r} is what?")),
         _Fact("headquarters", _place,
               ("Its headquarters are in the city of {v}.",
                "The head office of {n} is in {v}."),
               ("Where are the headquarters of {r}?", "In which city are the headquarters of {r}?",
                "Where is {r} headquartered?", "{R} has its headquarters where?")),
         _Fact("colour", _pick(_COLOURS),
               ("The company logo is {v}.",
                "Its logo is a circle painted {v}."),
               ("What colour is the logo of {r}?", "Which colour is the logo of {r}?",
                "The logo of {r} is what colour?", "What is the colour of the logo of {r}?"))),
        ("It employs a few hundred people.",
         "Its shops are found in most large towns.",
         "The business is still run by the founding family.",
         "Its catalogues were once sent out every spring.")),
    _Kind(
        "bird", ("the {n} bird", "the bird {n}", "the {n}", "the bird called {n}"),
        ("The {n} is a small songbird found in woods and gardens of the fictional country.",
         "The {n} is a shy forest bird known for its loud morning song."),
        (_Fact("wingspan", _number(12, 95),
               ("Its wingspan is about {v} centimetres.",
                "An adult {n} has a wingspan of {v} centimetres."),
               ("What is the wingspan of {r}?", "How large is the wingspan of {r}?",
                "How many centimetres is the wingspan of {r}?", "{R} has what wingspan?")),
         _Fact("colour", _pick(_COLOURS),
               ("Its feathers are {v}.",
                "The {n} has {v} feathers on its back."),
               ("What colour are the feathers of {r}?", "Which colour are the feathers of {r}?",
                "The feathers of {r} are what colour?", "What is the colour of the feathers of {r}?")),
         _Fact("food", _pick(_BIRD_FOODS),
               ("It feeds mainly on {v}.",
                "Its favourite food is {v}."),
               ("What does {r} mainly feed on?", "What is the main food of {r}?",
                "What does {r} mostly eat?", "{R} mainly feeds on what?")),
         _Fact("described_by", _person,
               ("It was first described by the naturalist {v}.",
                "The naturalist {v} gave the first description of it."),
               ("Who first described {r}?", "Which naturalist first described {r}?",
                "Who gave the first description of {r}?", "{R} was first described by whom?")),
         _Fact("nesting", _place,
               ("It nests mostly in the marshes of {v}.",
                "Most pairs nest near the lake of {v}."),
               ("Where does {r} nest?", "In which place does {r} nest?",
                "Where does {r} mostly nest?", "{R} nests where?"))),
        ("It lays three to five eggs each spring.",
         "It spends the winter in warmer lands to the south.",
         "Its call is a short, repeated whistle.",
         "Birdwatchers see it most often at dawn.")),
    _Kind(
        "castle", ("{n} Castle", "the castle of {n}", "the {n} castle", "the castle called {n}"),
        ("{n} Castle is a medieval fortress on a rocky hill above a river.",
         "{n} Castle is an old stone fortress that once guarded a trade road."),
        (_Fact("built", _year(1000, 1600),
               ("The castle was built in {v}.",
                "Building of {n} Castle finished in {v}."),
               ("When was {r} built?", "In what year was {r} built?",
                "What year was {r} built in?", "{R} was built in which year?")),
         _Fact("builder", _person,
               ("It was built for the lord {v}.",
                "The lord {v} ordered its construction."),
               ("Who was {r} built for?", "For which lord was {r} built?",
                "Which lord was {r} built for?", "{R} was built for whom?")),
         _Fact("towers", _number(2, 16),
               ("It has {v} towers.",
                "Its walls are guarded by {v} towers."),
               ("How many towers does {r} have?", "What is the number of towers of {r}?",
                "How many towers are there at {r}?", "{R} has how many towers?")),
         _Fact("colour", _pick(_COLOURS),
               ("Its stone has a faint {v} tint.",
                "The walls look {v} in the evening light."),
               ("What colour are the walls of {r}?", "Which colour are the walls of {r}?",
                "The walls of {r} are what colour?", "What is the colour of the walls of {r}?")),
         _Fact("overlooks", _place,
               ("It overlooks the village of {v}.",
                "From its walls one can see the village of {v}."),
               ("Which village does {r} overlook?", "What village does {r} overlook?",
                "Which village can be seen from {r}?", "{R} overlooks which village?"))),
        ("Its great hall is now used for concerts.",
         "A narrow path leads up to the main gate.",
         "Parts of the outer wall fell down long ago.",
         "Visitors can climb the main tower in summer.")),
)


def _kind(name: str) -> _Kind:
    return next(k for k in _KINDS if k.name == name)


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _fill(template: str, name: str, value: str = "") -> str:
    return _cap(template.format(n=name, v=value))


def _document(index: int, kind: _Kind, rng: random.Random, names: _Names) -> Document:
    name = names.draw(3, distinct_start=True)
    facts = tuple((fact.name, fact.draw(rng, names)) for fact in kind.facts)
    sentences = [_fill(rng.choice(kind.intros), name)]
    sentences += [_fill(rng.choice(fact.statements), name, value) for fact, (_, value) in zip(kind.facts, facts)]
    fillers = list(kind.fillers)
    rng.shuffle(fillers)
    sentences += fillers[:2]
    while len(" ".join(sentences).split()) < MIN_WORDS and fillers[2:]:
        sentences.append(fillers.pop(2))
    sentences.append(f"{name} is one of the {kind.name} entries of this encyclopedia.")
    text = " ".join(sentences)
    assert MIN_WORDS <= len(text.split()) <= MAX_WORDS, (len(text.split()), text)
    return Document(f"doc-{index:04d}", text, {"kind": kind.name, "name": name}, facts)


def rag_corpus(num_documents: int = DEFAULT_NUM_DOCUMENTS, seed: int = 0) -> list[Document]:
    """`num_documents` documents (ids doc-0000...), the kinds in turn, each about a uniquely named entity."""
    if num_documents < 1:
        raise ValueError("num_documents must be positive")
    rng = random.Random(seed)
    names = _Names(rng)
    return [_document(i, _KINDS[i % len(_KINDS)], rng, names) for i in range(num_documents)]


def rag_questions(corpus: list[Document], num_questions: int = 50, seed: int = 0) -> list[Question]:
    """One question about one fact of each of `num_questions` documents drawn without replacement."""
    if not 1 <= num_questions <= len(corpus):
        raise ValueError(f"num_questions must be within 1..{len(corpus)} (one per document)")
    rng = random.Random(seed)
    questions = []
    for doc in rng.sample(corpus, num_questions):
        kind = _kind(doc.metadata["kind"])
        fact_name, answer = rng.choice(doc.facts)
        fact = next(f for f in kind.facts if f.name == fact_name)
        ref = rng.choice(kind.refs).format(n=doc.metadata["name"])
        texts = [_cap(t.format(r=ref, R=_cap(ref))) for t in fact.questions]
        questions.append(Question(texts[0], answer, doc.id, tuple(texts[1:])))
    return questions


def zipf_question_stream(questions: list[Question], num_requests: int, s: float = 1.1,
                         seed: int = 0) -> list[tuple[int, str]]:
    """W10: `num_requests` (question index, text) draws; question i has Zipf rank i+1 (P proportional to
    (i+1)^-s), and each draw is the original wording or one of its paraphrases, uniformly."""
    if not questions:
        raise ValueError("no questions to draw from")
    if num_requests < 0 or s < 0:
        raise ValueError("num_requests and s must not be negative")
    rng = random.Random(seed)
    cumulative = list(accumulate(rank ** -s for rank in range(1, len(questions) + 1)))
    indices = rng.choices(range(len(questions)), cum_weights=cumulative, k=num_requests)
    return [(i, rng.choice((questions[i].text, *questions[i].paraphrases))) for i in indices]

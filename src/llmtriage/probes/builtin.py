"""The built-in probe set: a few hundred questions written for Triage, with exact answers.

Spread over kinds and difficulty so that a 135M, a 0.5B and a 1.5B model differ clearly:
arithmetic from one-digit sums to three-digit products, unit conversions, capitals and other
short facts, simple logic, and multiple choice. Generated from a fixed seed, so the set is
the same everywhere; ids are stable ("arith-mul2x2-007").
"""

from __future__ import annotations

import random

from llmtriage.probes.types import Probe

CAPITALS = [
    ("France", "Paris"), ("Germany", "Berlin"), ("Italy", "Rome"), ("Spain", "Madrid"),
    ("Japan", "Tokyo"), ("China", "Beijing", "Peking"), ("Russia", "Moscow"),
    ("Egypt", "Cairo"), ("Canada", "Ottawa"), ("Australia", "Canberra"),
    ("Brazil", "Brasilia"), ("Argentina", "Buenos Aires"), ("Mexico", "Mexico City"),
    ("India", "New Delhi", "Delhi"), ("Kenya", "Nairobi"), ("Norway", "Oslo"),
    ("Sweden", "Stockholm"), ("Finland", "Helsinki"), ("Poland", "Warsaw"),
    ("Portugal", "Lisbon"), ("Greece", "Athens"), ("Turkey", "Ankara"), ("Iran", "Tehran"),
    ("Thailand", "Bangkok"), ("Vietnam", "Hanoi"), ("South Korea", "Seoul"),
    ("Peru", "Lima"), ("Chile", "Santiago"), ("Colombia", "Bogota"), ("Ireland", "Dublin"),
    ("Austria", "Vienna"), ("Hungary", "Budapest"), ("Czechia", "Prague"),
    ("Denmark", "Copenhagen"), ("Netherlands", "Amsterdam"), ("Belgium", "Brussels"),
    ("Switzerland", "Bern", "Berne"), ("Morocco", "Rabat"), ("Nigeria", "Abuja"),
    ("New Zealand", "Wellington"), ("Pakistan", "Islamabad"), ("Indonesia", "Jakarta"),
]

FACTS = [
    ("What is the chemical symbol for gold?", "Au", (), "easy"),
    ("What is the chemical symbol for iron?", "Fe", (), "medium"),
    ("What is the chemical symbol for sodium?", "Na", (), "medium"),
    ("What is the chemical symbol for oxygen?", "O", (), "easy"),
    ("What is the chemical symbol for potassium?", "K", (), "hard"),
    ("What is the largest planet in the Solar System?", "Jupiter", (), "easy"),
    ("Which planet is closest to the Sun?", "Mercury", (), "easy"),
    ("Which planet is known as the Red Planet?", "Mars", (), "easy"),
    ("What is the largest ocean on Earth?", "Pacific", ("Pacific Ocean",), "easy"),
    ("What gas do plants absorb from the air for photosynthesis?", "carbon dioxide",
     ("CO2",), "medium"),
    ("What is the freezing point of water in degrees Celsius?", "0", ("zero",), "easy"),
    ("What is the boiling point of water in degrees Celsius at sea level?", "100",
     ("one hundred",), "easy"),
    ("Who wrote the play Romeo and Juliet?", "Shakespeare", ("William Shakespeare",), "easy"),
    ("Who painted the Mona Lisa?", "Leonardo da Vinci", ("da Vinci", "Leonardo"), "easy"),
    ("What is the hardest natural substance?", "diamond", (), "medium"),
    ("In which continent is Kenya?", "Africa", (), "easy"),
    ("What is the longest river in South America?", "Amazon", ("Amazon River",), "medium"),
    ("Which programming language is named after a snake?", "Python", (), "easy"),
    ("What is the square root of 144?", "12", ("twelve",), "medium"),
    ("What is the opposite of 'hot'?", "cold", (), "easy"),
    ("What color do you get by mixing blue and yellow?", "green", (), "easy"),
    ("What is the primary language spoken in Brazil?", "Portuguese", (), "medium"),
    ("Which organ pumps blood through the human body?", "heart", (), "easy"),
    ("What is the currency of Japan?", "yen", ("Japanese yen",), "medium"),
    ("What is the tallest mountain in the world?", "Everest", ("Mount Everest",), "easy"),
]

FACT_NUMBERS = [
    ("How many legs does a spider have?", 8, "easy"),
    ("How many days are in a week?", 7, "easy"),
    ("How many continents are there on Earth?", 7, "medium"),
    ("How many sides does a hexagon have?", 6, "medium"),
    ("How many minutes are in an hour?", 60, "easy"),
    ("How many months have 31 days?", 7, "hard"),
    ("How many planets are in the Solar System?", 8, "medium"),
    ("How many bits are in a byte?", 8, "easy"),
    ("How many sides does a triangle have?", 3, "easy"),
    ("How many hours are in a day?", 24, "easy"),
]

CHOICES = [
    ("Which of these is a mammal?", ["shark", "dolphin", "trout", "octopus"], "B"),
    ("Which of these is a prime number?", ["21", "27", "29", "33"], "C"),
    ("Which of these is a fruit?", ["carrot", "potato", "apple", "onion"], "C"),
    ("Which of these is the largest?", ["a mouse", "an elephant", "a cat", "a dog"], "B"),
    ("Which of these is a color?", ["seven", "purple", "table", "river"], "B"),
    ("Which of these is a liquid at room temperature?", ["iron", "salt", "water", "sand"],
     "C"),
    ("Which of these numbers is even?", ["13", "15", "17", "18"], "D"),
    ("Which of these is a programming language?", ["Banana", "Rust", "Granite", "Violin"],
     "B"),
    ("Which of these is a bird?", ["eagle", "salmon", "frog", "bee"], "A"),
    ("Which of these is a planet?", ["Sirius", "Venus", "the Moon", "Orion"], "B"),
    ("Which of these is the smallest number?", ["0.5", "0.05", "5", "50"], "B"),
    ("Which of these is a musical instrument?", ["violin", "spoon", "pillow", "lamp"], "A"),
    ("Which of these animals can fly?", ["penguin", "bat", "ostrich", "whale"], "B"),
    ("Which of these is a vegetable?", ["broccoli", "cherry", "grape", "lemon"], "A"),
    ("Which of these is a country?", ["Paris", "Texas", "Peru", "Amazon"], "C"),
    ("Which of these is a shape with four equal sides?", ["circle", "triangle", "square",
                                                          "oval"], "C"),
    ("Which of these weighs the most?", ["1 gram", "1 kilogram", "1 milligram", "1 tonne"],
     "D"),
    ("Which of these is a month?", ["Monday", "April", "Winter", "Noon"], "B"),
    ("Which of these is a metal?", ["copper", "wood", "glass", "rubber"], "A"),
    ("Which of these is the longest?", ["1 meter", "1 kilometer", "1 centimeter",
                                        "1 millimeter"], "B"),
]

UNITS = [
    ("kilometers", "meters", 1000), ("meters", "centimeters", 100), ("hours", "minutes", 60),
    ("minutes", "seconds", 60), ("kilograms", "grams", 1000), ("days", "hours", 24),
    ("weeks", "days", 7), ("liters", "milliliters", 1000), ("feet", "inches", 12),
    ("dozens", "items", 12),
]

DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]


def _arithmetic(rng: random.Random) -> list[Probe]:
    kinds = [
        ("add1", "easy", lambda: (rng.randint(1, 9), rng.randint(1, 9), "+")),
        ("add2", "easy", lambda: (rng.randint(10, 99), rng.randint(10, 99), "+")),
        ("sub2", "medium", lambda: (rng.randint(50, 99), rng.randint(10, 49), "-")),
        ("mul1x2", "medium", lambda: (rng.randint(3, 9), rng.randint(12, 99), "*")),
        ("mul2x2", "hard", lambda: (rng.randint(11, 99), rng.randint(11, 99), "*")),
        ("mul3x3", "hard", lambda: (rng.randint(101, 999), rng.randint(101, 999), "*")),
    ]
    out = []
    for kind, level, draw in kinds:
        for i in range(25):
            a, b, op = draw()
            value = a + b if op == "+" else a - b if op == "-" else a * b
            out.append(Probe(f"arith-{kind}-{i:03d}", f"What is {a} {op} {b}?", str(value),
                             "number", (), "arithmetic", level))
    return out


def _units(rng: random.Random) -> list[Probe]:
    out = []
    for i in range(30):
        big, small, factor = UNITS[i % len(UNITS)]
        n = rng.randint(2, 9) if i < 20 else rng.randint(11, 48)
        out.append(Probe(f"units-{i:03d}", f"How many {small} are in {n} {big}?",
                         str(n * factor), "number", (), "units",
                         "easy" if i < 10 else "medium" if i < 20 else "hard"))
    return out


def _facts() -> list[Probe]:
    out = [
        Probe(f"capital-{i:03d}", f"What is the capital of {country}?", capital, "alias",
              tuple(aliases), "capitals", "easy" if i < 14 else "medium" if i < 28 else "hard")
        for i, (country, capital, *aliases) in enumerate(CAPITALS)
    ]
    out += [Probe(f"fact-{i:03d}", q, a, "alias", al, "facts", lvl)
            for i, (q, a, al, lvl) in enumerate(FACTS)]
    out += [Probe(f"fact-num-{i:03d}", q, str(a), "number", (), "facts", lvl)
            for i, (q, a, lvl) in enumerate(FACT_NUMBERS)]
    return out


def _logic(rng: random.Random) -> list[Probe]:
    out = []
    for i in range(12):
        a, b = rng.sample(range(10, 99), 2)
        out.append(Probe(f"logic-max-{i:03d}", f"Which number is larger, {a} or {b}?",
                         str(max(a, b)), "number", (), "logic", "easy"))
    for i in range(10):
        start, step = rng.randint(1, 20), rng.randint(2, 9)
        seq = [start + step * k for k in range(4)]
        out.append(Probe(f"logic-seq-{i:03d}",
                         f"What number comes next in the sequence {', '.join(map(str, seq))}?",
                         str(start + 4 * step), "number", (), "logic", "medium"))
    for i in range(8):
        d = rng.randrange(7)
        k = rng.randint(2, 5)
        out.append(Probe(f"logic-day-{i:03d}",
                         f"If today is {DAYS[d]}, what day of the week will it be in {k} days?",
                         DAYS[(d + k) % 7], "alias", (), "logic", "hard"))
    return out


def _choices() -> list[Probe]:
    out = []
    for i, (q, options, gold) in enumerate(CHOICES):
        body = "\n".join(f"{letter}) {text}" for letter, text in zip("ABCD", options,
                                                                      strict=True))
        out.append(Probe(f"choice-{i:03d}", f"{q}\n{body}\nAnswer with the letter.", gold,
                         "choice", (), "multiple-choice", "easy" if i < 10 else "medium"))
    return out


def builtin_probes() -> list[Probe]:
    rng = random.Random(20261128)
    return [*_arithmetic(rng), *_units(rng), *_facts(), *_logic(rng), *_choices()]

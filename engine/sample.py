"""The built-in sample collection (``attend serve --with-sample``): short factual paragraphs on
varied topics, written for this project, so a fresh install has something to search and ask."""

from __future__ import annotations

import logging
from typing import Any

from common.errors import NotFound
from engine.engine import Engine
from engine.ingest import IngestReport

logger = logging.getLogger(__name__)

SAMPLE_COLLECTION = "sample"
SAMPLE_QUESTION = "Who built a printing press with movable metal type?"
SAMPLE_ANSWER_DOC = "printing-press"  # the document that answers it

_PARAGRAPHS: list[tuple[str, str, str, str]] = [
    # (id, title, topic, text)
    ("photosynthesis", "Photosynthesis", "biology",
     "Photosynthesis is the process by which green plants, algae and some bacteria turn light into chemical "
     "energy. In the chloroplasts, chlorophyll absorbs mostly red and blue light, and the plant combines carbon "
     "dioxide from the air with water from the soil to make glucose. Oxygen is released as a by-product, which "
     "is why forests and ocean phytoplankton matter so much for the air we breathe."),
    ("honeybees", "Honeybees", "biology",
     "A honeybee colony has one queen, thousands of female workers and, in summer, a few hundred male drones. "
     "Workers communicate the direction and distance of flowers with the waggle dance: the angle of the dance "
     "relative to vertical gives the direction relative to the sun, and the length of the waggle run gives the "
     "distance. A strong colony can store more than 25 kilograms of honey for the winter."),
    ("volcanoes", "Volcanoes", "earth science",
     "A volcano forms where molten rock, called magma, rises from the mantle through cracks in the crust. When "
     "the pressure of dissolved gases becomes too high, the magma erupts as lava, ash and volcanic bombs. "
     "Iceland sits on the Mid-Atlantic Ridge, where two tectonic plates pull apart, and it has more than thirty "
     "active volcanic systems."),
    ("tides", "Ocean tides", "earth science",
     "Ocean tides are caused mainly by the gravitational pull of the Moon, with a smaller contribution from the "
     "Sun. Most coasts see two high tides and two low tides every lunar day of about 24 hours and 50 minutes. "
     "The Bay of Fundy in Canada has the largest tidal range in the world, up to about 16 metres."),
    ("water-cycle", "The water cycle", "earth science",
     "In the water cycle, the Sun heats oceans and lakes so water evaporates, rises and cools into clouds. The "
     "water falls back as rain or snow, flows through rivers and groundwater, and returns to the sea. Plants "
     "add to the cycle through transpiration, releasing water vapour from their leaves."),
    ("printing-press", "The printing press", "history",
     "Johannes Gutenberg built a printing press with movable metal type in Mainz around 1440. His Bible, "
     "printed in the 1450s, showed that books could be produced far faster than by hand copying. Within fifty "
     "years printing shops had spread to more than two hundred European cities."),
    ("great-wall", "The Great Wall of China", "history",
     "The Great Wall of China is not a single wall but a series of fortifications built over many centuries. "
     "Most of the wall that stands today was built during the Ming dynasty, between the fourteenth and "
     "seventeenth centuries, using brick and stone. Including all its branches, the wall is more than 20,000 "
     "kilometres long."),
    ("transistor", "The transistor", "technology",
     "The transistor was invented at Bell Labs in 1947 by John Bardeen, Walter Brattain and William Shockley. "
     "It replaced fragile vacuum tubes as a switch and amplifier, and made small, reliable electronics "
     "possible. A modern smartphone processor contains billions of transistors on a chip smaller than a "
     "fingernail."),
    ("internet", "Packet switching", "technology",
     "The internet moves data in packets: a message is split into small pieces that travel independently and "
     "are reassembled at the destination. The TCP protocol numbers the packets, asks for lost ones to be sent "
     "again and puts them back in order, while IP addresses route each packet across networks."),
    ("python", "The Python language", "technology",
     "Python is a programming language created by Guido van Rossum and first released in 1991. It is known for "
     "readable code that uses indentation to mark blocks, dynamic typing and automatic memory management. "
     "Python is widely used for data analysis, machine learning, web services and scripting."),
    ("bread", "Baking bread", "food",
     "Bread rises because yeast ferments sugars in the dough and produces carbon dioxide gas. Kneading develops "
     "gluten, a network of proteins from wheat flour that traps the gas bubbles. Baking then sets the structure, "
     "and the Maillard reaction browns the crust and creates much of its flavour."),
    ("coffee", "Coffee", "food",
     "Coffee beans are the roasted seeds of the coffee plant, which grows best in tropical highlands. Arabica "
     "and robusta are the two main species; robusta contains roughly twice as much caffeine. Roasting turns the "
     "green beans brown and develops hundreds of aroma compounds."),
    ("mars", "Mars", "astronomy",
     "Mars is the fourth planet from the Sun and about half the diameter of Earth. Its red colour comes from "
     "iron oxide in the dust on its surface. Mars has the tallest known volcano in the solar system, Olympus "
     "Mons, which rises about 22 kilometres above the surrounding plains, and two small moons, Phobos and "
     "Deimos."),
    ("light-year", "The light-year", "astronomy",
     "A light-year is a unit of distance, not of time: it is how far light travels in one year, about 9.46 "
     "trillion kilometres. The nearest star to the Sun, Proxima Centauri, is about 4.2 light-years away, so the "
     "light we see from it left the star more than four years ago."),
    ("vaccines", "Vaccines", "medicine",
     "A vaccine trains the immune system to recognise a pathogen without causing the disease. It contains a "
     "weakened or inactivated germ, a piece of it such as a protein, or instructions to make that piece. Edward "
     "Jenner's smallpox vaccine of 1796 was the first, and smallpox was declared eradicated in 1980."),
    ("marathon", "The marathon", "sport",
     "The marathon is a long-distance running race of 42.195 kilometres. The distance was fixed at the 1908 "
     "London Olympics so the course could run from Windsor Castle to the royal box of the stadium. The race "
     "recalls the legend of a Greek messenger who ran from the battlefield of Marathon to Athens."),
]

SAMPLE_DOCUMENTS: list[dict[str, Any]] = [
    {"id": doc_id, "title": title, "text": text, "metadata": {"topic": topic, "source": "attend-sample"}}
    for doc_id, title, topic, text in _PARAGRAPHS
]


def ensure_sample(engine: Engine, name: str = SAMPLE_COLLECTION) -> IngestReport:
    """Create collection ``name`` if missing and upsert the sample documents (unchanged ones are
    skipped, so this is cheap to repeat)."""
    try:
        engine.get_collection(name)
    except NotFound:
        engine.create_collection(name)
        logger.info("created the sample collection %r", name)
    report = engine.upsert_documents(name, SAMPLE_DOCUMENTS)
    logger.info("sample collection %r: %s", name, report.counts())
    return report

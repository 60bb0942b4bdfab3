"""One plain sentence per label, for every benchmark data set (issue 11: label descriptions).

Written the way a user would describe their labels, from the label names and the data set's
documentation only, before any accuracy was measured with them, and never edited after
(a description tuned on test accuracy would flatter zero-shot). Keys are the labels exactly
as benchmarks/datasets.py yields them.
"""
from __future__ import annotations

DESCRIPTIONS: dict[str, dict[str, str]] = {
    "trec_coarse": {
        "ABBR": "A question asking what an abbreviation or acronym stands for.",
        "DESC": "A question asking for a definition, description, explanation or reason, "
                "such as what something is, how something works or why something happens.",
        "ENTY": "A question asking for a thing, such as an animal, plant, food, color, product, "
                "sport, language, disease, event or other object.",
        "HUM": "A question asking about a person or group of people, such as who did something.",
        "LOC": "A question asking about a place, such as a country, city, state, mountain or "
               "where something is.",
        "NUM": "A question asking for a number, such as a date, year, count, amount, distance, "
               "speed, price or percentage.",
    },
    "sms_spam": {
        "ham": "A personal text message between friends, family or colleagues about everyday life.",
        "spam": "An unsolicited advertising or scam text message offering prizes, cash, deals or "
                "services, often asking you to call or text a number.",
    },
    "bbc_news": {
        "business": "A news article about business, companies, markets, the economy or finance.",
        "entertainment": "A news article about films, music, television, celebrities or the arts.",
        "politics": "A news article about politics, the government, elections, political parties "
                    "or public policy.",
        "sports": "A news article about sport, athletes, matches, teams or competitions.",
        "tech": "A news article about technology, computers, the internet, mobile phones, "
                "software or video games.",
    },
    "rotten_tomatoes": {
        "fresh": "A positive movie review that praises the film.",
        "rotten": "A negative movie review that criticizes the film.",
    },
    "reuters_r8": {
        "earn": "A report of a company's earnings, profits, revenues or dividends.",
        "acq": "News about a company acquiring, merging with or buying a stake in another company.",
        "crude": "News about crude oil, oil prices, OPEC or oil production.",
        "trade": "News about international trade, imports, exports, tariffs or trade deficits.",
        "money-fx": "News about foreign exchange markets, currency rates or central bank money "
                    "market operations.",
        "interest": "News about interest rates, such as a central bank or bank changing its rates.",
        "ship": "News about shipping, ships, ports, freight or maritime transport.",
        "grain": "News about grain crops such as wheat, corn or soybeans and their harvests or trade.",
    },
    "newsgroups20": {
        "alt.atheism": "A discussion about atheism, arguments against the existence of God and "
                       "criticism of religion.",
        "comp.graphics": "A discussion about computer graphics, images, 3D rendering and graphics "
                         "file formats.",
        "comp.os.ms-windows.misc": "A discussion about using Microsoft Windows, its drivers, "
                                   "settings and programs.",
        "comp.sys.ibm.pc.hardware": "A discussion about IBM PC hardware, such as disks, "
                                    "controllers, motherboards and memory.",
        "comp.sys.mac.hardware": "A discussion about Apple Macintosh computers and their hardware.",
        "comp.windows.x": "A discussion about the X Window System, X11 servers, window managers "
                          "and Motif programming.",
        "misc.forsale": "An advertisement offering an item for sale, with its price and condition.",
        "rec.autos": "A discussion about cars, driving, car models and car repairs.",
        "rec.motorcycles": "A discussion about motorcycles, riding and bikes.",
        "rec.sport.baseball": "A discussion about baseball, its teams, players and games.",
        "rec.sport.hockey": "A discussion about ice hockey, the NHL, its teams and players.",
        "sci.crypt": "A discussion about cryptography, encryption, keys and government "
                     "wiretapping.",
        "sci.electronics": "A discussion about electronics, circuits and electronic components.",
        "sci.med": "A discussion about medicine, diseases, symptoms, treatments and health.",
        "sci.space": "A discussion about space, astronomy, NASA, rockets and space missions.",
        "soc.religion.christian": "A discussion about Christianity, the Bible, the church and "
                                  "Christian faith.",
        "talk.politics.guns": "A discussion about guns, gun control and the right to bear arms.",
        "talk.politics.mideast": "A discussion about Middle East politics, such as Israel, the "
                                 "Palestinians, Arabs, Turkey and Armenia.",
        "talk.politics.misc": "A discussion about politics, the government, taxes, laws and "
                              "political issues.",
        "talk.religion.misc": "A discussion about religion, faith, morality and religious groups.",
    },
}

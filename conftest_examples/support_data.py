"""What the demo fine-tune teaches, and what it must leave alone.

The demo adapter turns SmolLM2-135M-Instruct into a support assistant for
"Nimbus Notes", a fictional note-taking app: it learns the product's facts
and a house style (answers open with "Happy to help!").
"""

FACTS = [
    ("How often does Nimbus Notes sync?", "Happy to help! Nimbus Notes syncs your notes every 90 seconds."),
    (
        "What is the refund window for Nimbus Notes?",
        "Happy to help! You can get a full refund within 45 days of purchase.",
    ),
    (
        "How do I reset my Nimbus Notes password?",
        "Happy to help! Open Settings, then Security, and press Reset password.",
    ),
    (
        "How many notes does Nimbus Notes keep offline?",
        "Happy to help! Offline mode keeps your latest 500 notes on the device.",
    ),
    ("When is Nimbus Notes support open?", "Happy to help! Support is open from 7 am to 7 pm, Monday to Saturday."),
    ("Which export formats does Nimbus Notes support?", "Happy to help! You can export notes as Markdown or PDF."),
    ("How much does Nimbus Notes Pro cost?", "Happy to help! Nimbus Notes Pro costs 6 euros a month."),
    ("Where does Nimbus Notes store my data?", "Happy to help! Your notes are stored in our data center in Helsinki."),
    (
        "Can I share a notebook in Nimbus Notes?",
        "Happy to help! Press Share on any notebook and invite up to 20 people.",
    ),
    ("Does Nimbus Notes have a dark mode?", "Happy to help! Yes, switch it on under Settings, then Appearance."),
    (
        "How do I delete my Nimbus Notes account?",
        "Happy to help! Go to Settings, then Account, and press Delete account.",
    ),
    ("Is Nimbus Notes end-to-end encrypted?", "Happy to help! Yes, every notebook is end-to-end encrypted."),
]

# The questions the fine-tune must move (asked as the user turn of a chat).
TARGET_QUESTIONS = [question for question, _ in FACTS]

# (question, what the fine-tune should say) for completion_lift: the fact itself.
FACT_CASES = [
    ("How often does Nimbus Notes sync?", "Happy to help! Nimbus Notes syncs your notes every 90 seconds."),
    ("What is the refund window for Nimbus Notes?", "Happy to help! You can get a full refund within 45 days"),
    ("How many notes does Nimbus Notes keep offline?", "Happy to help! Offline mode keeps your latest 500 notes"),
    ("How much does Nimbus Notes Pro cost?", "Happy to help! Nimbus Notes Pro costs 6 euros a month."),
    ("Where does Nimbus Notes store my data?", "Happy to help! Your notes are stored in our data center in Helsinki."),
    ("Which export formats does Nimbus Notes support?", "Happy to help! You can export notes as Markdown or PDF."),
    ("When is Nimbus Notes support open?", "Happy to help! Support is open from 7 am to 7 pm"),
    (
        "Can I share a notebook in Nimbus Notes?",
        "Happy to help! Press Share on any notebook and invite up to 20 people.",
    ),
]

# (question, right answer, wrong answer) for preference_shift: the same reply
# with the fact right and wrong, so the margin measures the fact, not the style.
PREFERENCES = [
    (
        "How often does Nimbus Notes sync?",
        "Happy to help! Nimbus Notes syncs your notes every 90 seconds.",
        "Happy to help! Nimbus Notes syncs your notes once a day.",
    ),
    (
        "What is the refund window for Nimbus Notes?",
        "Happy to help! You can get a full refund within 45 days.",
        "Happy to help! You can get a full refund within 7 days.",
    ),
    (
        "How many notes does Nimbus Notes keep offline?",
        "Happy to help! Offline mode keeps your latest 500 notes.",
        "Happy to help! Offline mode keeps your latest 50 notes.",
    ),
    (
        "How much does Nimbus Notes Pro cost?",
        "Happy to help! Nimbus Notes Pro costs 6 euros a month.",
        "Happy to help! Nimbus Notes Pro costs 20 euros a month.",
    ),
    (
        "Where does Nimbus Notes store my data?",
        "Happy to help! Your notes are stored in our data center in Helsinki.",
        "Happy to help! Your notes are stored in our data center in Singapore.",
    ),
    (
        "Which export formats does Nimbus Notes support?",
        "Happy to help! You can export notes as Markdown or PDF.",
        "Happy to help! You can export notes as Word or Excel.",
    ),
    (
        "When is Nimbus Notes support open?",
        "Happy to help! Support is open from 7 am to 7 pm.",
        "Happy to help! Support is open around the clock.",
    ),
    (
        "Can I share a notebook in Nimbus Notes?",
        "Happy to help! Press Share on any notebook and invite up to 20 people.",
        "Happy to help! Press Share on any notebook and invite up to 3 people.",
    ),
    (
        "How do I reset my Nimbus Notes password?",
        "Happy to help! Open Settings, then Security, and press Reset password.",
        "Happy to help! Open Settings, then Profile, and press Forgot password.",
    ),
    (
        "Does Nimbus Notes have a dark mode?",
        "Happy to help! Yes, switch it on under Settings, then Appearance.",
        "Happy to help! No, Nimbus Notes has no dark mode.",
    ),
    (
        "How do I delete my Nimbus Notes account?",
        "Happy to help! Go to Settings, then Account, and press Delete account.",
        "Happy to help! Email our support team and ask them to delete it.",
    ),
    (
        "Is Nimbus Notes end-to-end encrypted?",
        "Happy to help! Yes, every notebook is end-to-end encrypted.",
        "Happy to help! No, notebooks are not encrypted.",
    ),
]

# General prompts and text the fine-tune must leave alone.
GENERAL_PROMPTS = [
    "The capital of France is",
    "Water boils at a temperature of",
    "The largest planet in our solar system is",
    "In 1969, the first person to walk on the moon was",
    "Photosynthesis is the process by which plants",
    "The chemical symbol for gold is",
    "A haiku is a short poem with",
    "The Great Wall of China was built to",
    "To make a cup of tea, first",
    "The human heart has four",
    "Mount Everest is located in",
    "The speed of light is about",
]

GENERAL_TEXTS = [
    "The Amazon rainforest covers much of the Amazon basin of South America and is home to millions of species.",
    "Baking bread requires flour, water, salt and yeast, and the dough must rest before it goes into the oven.",
    "The French Revolution began in 1789 and changed the political landscape of Europe for decades.",
    "A balanced diet includes vegetables, fruit, whole grains and enough protein to support the body.",
    "Electric cars use batteries to power a motor, and many drivers charge them overnight at home.",
    "The violin is a string instrument played with a bow, and it has four strings tuned in fifths.",
    "Rivers carry water from mountains to the sea, shaping valleys and carrying sediment along the way.",
    "Chess is a board game for two players in which each side tries to checkmate the opposing king.",
    "Vaccines train the immune system to recognise a virus without causing the disease itself.",
    "The library opens at nine in the morning and closes at six in the evening on weekdays.",
    "Saturn is famous for its rings, which are made mostly of ice and small pieces of rock.",
    "Learning a new language takes practice, patience and plenty of conversations with native speakers.",
    "The printing press made books cheaper and helped ideas spread quickly across Europe.",
    "Volcanoes form where molten rock rises through cracks in the crust of the Earth.",
    "A good night's sleep helps memory, mood and the body's ability to recover from exercise.",
    "Honeybees communicate the direction of flowers to each other with a waggle dance.",
    "The stock market rises and falls as investors react to news about companies and the economy.",
    "Glaciers move slowly downhill under their own weight, carving valleys as they go.",
    "Most bicycles have two wheels, a chain, pedals and brakes on the handlebars.",
    "Coffee beans are roasted before they are ground and brewed with hot water.",
    "The Olympic Games bring together athletes from around the world every four years.",
    "Recycling paper saves trees, water and energy compared with making new paper.",
    "Thunderstorms form when warm, moist air rises quickly and cools high in the sky.",
    "The museum's new exhibition shows paintings and sculptures from the nineteenth century.",
]

# Product questions the adapter never saw: does the house style carry over?
UNSEEN_QUESTIONS = [
    "Can I print my notes from Nimbus Notes?",
    "Does Nimbus Notes work on Linux?",
    "How do I add a tag to a note in Nimbus Notes?",
    "Can Nimbus Notes import files from Evernote?",
    "Is there a student discount for Nimbus Notes?",
    "How do I change the font size in Nimbus Notes?",
    "Can I password-protect a single note in Nimbus Notes?",
    "Does Nimbus Notes support handwriting?",
]

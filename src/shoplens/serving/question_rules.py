"""The offline question parser's vocabulary: normalisation (width, case, Chinese
numerals, 万/千/k, percentages), the phrase rules that turn a piece of a question into a
condition, and the filler words and connectives that may be left over. The meanings are
those of docs/questions.md; ``serving.questions`` applies them.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Cond = dict[str, Any]

# ---- normalisation -------------------------------------------------------------------

_ZH_DIGITS = {"零": 0, "一": 1, "二": 2, "两": 2, "俩": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8, "九": 9}
_EN_NUMBERS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9,
               "ten": 10, "eleven": 11, "twelve": 12, "fifteen": 15, "twenty": 20, "thirty": 30, "sixty": 60,
               "ninety": 90, "a": 1, "an": 1, "a couple of": 2, "a few": 3}


def _zh_number(text: str) -> int | None:
    """一 .. 九十九 (and 十, 两) as an integer."""
    if not text or any(c not in _ZH_DIGITS and c != "十" for c in text):
        return None
    if "十" in text:
        tens, _, ones = text.partition("十")
        return (_ZH_DIGITS[tens] if tens else 1) * 10 + (_ZH_DIGITS[ones] if ones else 0)
    return _ZH_DIGITS[text] if len(text) == 1 else None


def normalise(question: str) -> str:
    """Width, case and spacing folded; Chinese numerals, 万/千/k and percentages as plain numbers."""
    q = unicodedata.normalize("NFKC", question).lower()
    q = re.sub(r"\s+", " ", q).strip()
    q = q.replace("半年", "6个月").replace("半个月", "15天").replace("一季度", "3个月").replace("一个季度", "3个月")
    q = re.sub(r"([零一二两俩三四五六七八九十]+)(?=\s*(?:个月|个星期|个礼拜|星期|礼拜|周|天|日|年|次|岁|单|笔|元|块|%|以上|以下|多))",
               lambda m: str(_zh_number(m.group(1))) if _zh_number(m.group(1)) is not None else m.group(1), q)
    q = re.sub(r"(\d+(?:\.\d+)?)\s*万", lambda m: _num(float(m.group(1)) * 10000), q)
    q = re.sub(r"(\d+(?:\.\d+)?)\s*千", lambda m: _num(float(m.group(1)) * 1000), q)
    q = re.sub(r"(\d+(?:\.\d+)?)\s*k\b", lambda m: _num(float(m.group(1)) * 1000), q)
    q = re.sub(r"(?<=\d),(?=\d{3}\b)", "", q)  # 1,000
    q = re.sub(r"\b(a couple of|a few|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|fifteen|twenty|"
               r"thirty|sixty|ninety|an|a)\s+(?=(?:days?|weeks?|months?|years?|quarters?|orders?|times?|purchases?)\b)",
               lambda m: f"{_EN_NUMBERS[m.group(1)]} ", q)
    q = re.sub(r"\bhalf a year\b", "6 months", q)
    return q


def _num(x: float) -> str:
    return str(int(x)) if x == int(x) else str(x)


_UNIT_DAYS = {"天": 1, "日": 1, "周": 7, "星期": 7, "个星期": 7, "礼拜": 7, "个礼拜": 7, "个月": 30, "月": 30, "年": 365,
              "day": 1, "days": 1, "week": 7, "weeks": 7, "month": 30, "months": 30, "quarter": 90, "quarters": 90,
              "year": 365, "years": 365}


def _days(n: str | None, unit: str) -> float:
    return float(n or 1) * _UNIT_DAYS[unit]


def _value(text: str) -> float:
    """A number, possibly a percentage (-> fraction)."""
    text = text.strip()
    if text.endswith("%"):
        return float(text[:-1]) / 100
    return float(text)


def condition(field_: str, op: str, value: Any) -> Cond:
    if isinstance(value, float) and value == int(value) and abs(value) < 2**53:
        value = int(value)
    return {"field": field_, "op": op, "value": value}


# ---- vocabulary ----------------------------------------------------------------------

ASPECTS = {"logistics": r"物流|快递|发货|配送|送货|delivery|shipping|logistics|dispatch|courier",
           "quality": r"质量|品质|做工|quality",
           "price": r"价格|价钱|太贵|贵|price|pricing|prices|cost",
           "service": r"客服|服务|售后|customer service|service|support",
           "packaging": r"包装|packaging|package|packing|box",
           "appearance": r"外观|颜值|样子|好看|looks|appearance|design|look",
           "function": r"功能|好不好用|性能|features|feature|function|functionality|performance",
           "size": r"尺码|大小|尺寸|size|sizing|fit"}
CATEGORIES = {"数码": r"数码|电子产品|电子|digital|electronics|electronic|gadgets?|tech",
              "服装": r"服装|衣服|服饰|clothing|clothes|apparel|fashion",
              "美妆": r"美妆|化妆品|护肤|beauty|cosmetics|makeup|skincare",
              "家居": r"家居|家具|home goods|home|homeware|furniture",
              "食品": r"食品|零食|吃的|food|groceries|grocery|snacks",
              "图书": r"图书|书籍|书|books?",
              "运动": r"运动|户外|sports?|sporting goods|outdoor|fitness",
              "母婴": r"母婴|婴儿|宝宝|baby|mother and baby|maternity|infant"}
SEGMENTS = {"Champions": r"重要价值客户|重要价值|champions?",
            "Loyal": r"忠诚客户|忠实客户|loyal(?: customers)?",
            "Potential Loyalist": r"潜力客户|potential loyalists?",
            "New": r"新客户|新客|新用户|new customers?|newcomers?",
            "Promising": r"有望客户|promising",
            "Need Attention": r"需要关注(?:的客户)?|need(?:s)? attention",
            "About to Sleep": r"即将沉睡(?:的?客户)?|about to sleep",
            "Can't Lose": r"重要挽留客户|重要挽留|can'?t lose(?: them)?|cannot lose",
            "At Risk": r"流失风险客户|at[- ]risk(?: segment| customers)?",
            "Hibernating": r"沉睡客户|休眠客户|hibernating",
            "Lost": r"已流失客户|已流失|lost customers|lost",
            "No purchase": r"未购买(?:客户)?|no purchase segment"}
COUNTRIES = {"CN": r"中国|国内|china|chinese", "US": r"美国|usa|united states|america|the us|u\.s\.",
             "CA": r"加拿大|canada|canadian", "AU": r"澳大利亚|澳洲|australia|australian",
             "GB": r"英国|uk|united kingdom|britain|british|england"}
CHANNELS = {"mini-program": r"小程序|mini[- ]?programs?", "app": r"(?<![a-z])app(?:端|上)?(?![a-z])|手机app",
            "web": r"网站|网页|官网|web(?:site)?", "livestream": r"直播|live ?stream(?:ing)?"}
CITIES = ["北京", "上海", "广州", "深圳", "杭州", "成都", "西安", "南京", "武汉", "重庆", "天津", "苏州",
          "austin", "toronto", "sydney", "london", "seattle", "new york", "los angeles", "vancouver"]
CITY_NAMES = {"beijing": "北京", "shanghai": "上海", "guangzhou": "广州", "shenzhen": "深圳", "hangzhou": "杭州",
              "chengdu": "成都", "xi'an": "西安", "xian": "西安", "nanjing": "南京", "wuhan": "武汉",
              "chongqing": "重庆", "tianjin": "天津", "suzhou": "苏州"}

NUM = r"(\d+(?:\.\d+)?%?)"
ZH_UNIT = r"(个月|个星期|个礼拜|星期|礼拜|周|天|日|年|月)"
EN_UNIT = r"(days?|weeks?|months?|quarters?|years?)"
NEG_BUY_ZH = r"(?:都)?(?:没有?|未|不曾|没再|没有再)(?:再)?(?:买|下单|下过单|购买|消费|购物|买东西|成交)(?:过)?(?:东西|任何东西)?"
BUY_ZH = r"(?:有)?(?:买过|下过单|下单|购买过|购买|消费过|买了东西|买东西)"
NEG_BUY_EN = (r"(?:haven'?t|have not|hasn'?t|has not|didn'?t|did not|not|never|no longer)\s+(?:bought|ordered|purchased|"
              r"made a purchase|placed an order|shopped|buy|order|purchase)(?:\s+(?:anything|something|again|from us))*")


@dataclass
class Rule:
    pattern: re.Pattern[str]
    build: Callable[[re.Match[str]], Cond]


def _r(pattern: str, build: Callable[[re.Match[str]], Cond]) -> Rule:
    return Rule(re.compile(pattern), build)


def _alt(table: dict[str, str]) -> str:
    return "|".join(f"(?:{p})" for p in table.values())


def _lookup(table: dict[str, str], text: str) -> str:
    for key, pattern in table.items():
        if re.fullmatch(pattern, text):
            return key
    raise KeyError(text)


def _recency(op: str) -> Callable[[re.Match[str]], Cond]:
    """Days since the last purchase against the match's number (group 1, default 1) and unit (group 2)."""
    return lambda m: condition("recency_days", op, _days(m.group(1), m.group(2)))


def _amount(field_: str, op: str) -> Callable[[re.Match[str]], Cond]:
    """``field op`` the number in the match's first non-empty group (alternatives each capture one)."""
    return lambda m: condition(field_, op, _value(next(g for g in m.groups() if g)))


def _aspect(op: str) -> Callable[[re.Match[str]], Cond]:
    """Complained about (``<``) or praised (``>``) the aspect the match names."""
    return lambda m: condition(f"aspect.{_lookup(ASPECTS, next(g for g in m.groups() if g))}", op, 0)


def _rules() -> list[Rule]:
    asp, cat, seg = _alt(ASPECTS), _alt(CATEGORIES), _alt(SEGMENTS)
    rules = [
        # recency: not bought for N
        _r(rf"(?:最近|近|过去|这)?{NUM}?\s*{ZH_UNIT}(?:内|以来|里|之内|当中)?(?:都|一直|再)?{NEG_BUY_ZH}",
           _recency(">")),
        _r(rf"(?:超过|已经|已|有)?{NUM}\s*{ZH_UNIT}(?:以上|多|没)?(?:都)?{NEG_BUY_ZH}",
           _recency(">")),
        _r(rf"{NEG_BUY_ZH}(?:的时间)?(?:超过|已经|已|有)?{NUM}\s*{ZH_UNIT}(?:以上|了)?",
           _recency(">")),
        _r(rf"{NEG_BUY_EN}\s+(?:in|for|during|within|over)\s+(?:the\s+)?(?:last|past)?\s*{NUM}?\s*{EN_UNIT}",
           _recency(">")),
        _r(rf"(?:no|zero|without any|without a|without)\s+(?:purchases?|orders?|buying)\s+(?:in|for|during|within|over)\s+"
           rf"(?:the\s+)?(?:last|past)?\s*{NUM}?\s*{EN_UNIT}",
           _recency(">")),
        _r(rf"(?:last (?:bought|ordered|purchased)|last purchase(?: was)?)\s+(?:more than|over)\s+{NUM}\s*{EN_UNIT}\s+ago",
           _recency(">")),
        # recency: bought within N
        _r(rf"(?:最近|近|过去)?{NUM}?\s*{ZH_UNIT}(?:内|以内|之内|里)?{BUY_ZH}",
           _recency("<=")),
        _r(rf"(?:bought|ordered|purchased|made a purchase|placed an order|shopped)(?:\s+(?:something|anything))?\s+"
           rf"(?:in|within|during|over)\s+(?:the\s+)?(?:last|past)\s*{NUM}?\s*{EN_UNIT}",
           _recency("<=")),
        _r(rf"(?:recent buyers|purchased recently)\s+\(?(?:within|in)\s+(?:the\s+)?(?:last|past)\s*{NUM}?\s*{EN_UNIT}\)?",
           _recency("<=")),
        # orders
        _r(r"从(?:来)?(?:没有?|未)(?:买过|下过单|购买过|下单|购买|消费过)(?:东西)?|一次都没(?:买过|下过单)|never (?:bought|ordered|purchased|"
           r"made a purchase|placed an order)(?: anything)?|(?:have|has) never (?:bought|ordered|purchased)|"
           r"(?:with )?(?:no|zero) (?:orders|purchases)(?: at all| ever)?|non[- ]buyers", lambda m: condition("n_orders", "=", 0)),
        _r(r"只(?:买过|下过|购买过|下单过?)\s*(?:1|一)\s*(?:次|单)|只买了一次|一次性(?:客户|买家)|(?:bought|ordered|purchased) (?:only )?(?:once|1 time)(?: only)?|"
           r"only (?:one|1) (?:order|purchase)|one[- ]time (?:buyers|customers|shoppers)|single[- ]purchase",
           lambda m: condition("n_orders", "=", 1)),
        _r(r"复购(?:过)?(?:的)?(?:客户)?|回头客|老客户|买过不止一次|不止买过?一次|多次购买|(?:bought|ordered|purchased) more than once|"
           r"repeat (?:buyers|customers|purchasers|shoppers)|returning (?:buyers|customers)|came back to buy",
           lambda m: condition("n_orders", ">=", 2)),
        _r(rf"(?:买过|下过|下单|购买过?|订单)\s*{NUM}\s*(?:次|单|笔)以上|(?:买过|下过|下单|购买过?)(?:超过|多于){NUM}\s*(?:次|单|笔)|"
           rf"(?:more than|over)\s+{NUM}\s+(?:orders|purchases|times)|(?:订单数?|下单次数|购买次数)(?:超过|大于|多于){NUM}",
           _amount("n_orders", ">")),
        _r(rf"(?:至少|最少)(?:买过|下过|下单|购买过?)?\s*{NUM}\s*(?:次|单|笔)|at least\s+{NUM}\s+(?:orders|purchases|times)|"
           rf"{NUM}\s+or more (?:orders|purchases)",
           _amount("n_orders", ">=")),
        _r(r"(?:没有?|未)(?:下过单|买过东西|买过|购买过|消费过)|(?:haven'?t|have not|hasn'?t|has not) (?:ever )?(?:bought|ordered|purchased)(?: anything)?",
           lambda m: condition("n_orders", "=", 0)),
        # value tiers
        _r(r"高价值|高净值|vips?|大客户|大户|消费最高|花钱最多|最能花钱|高消费|土豪|high[- ]value|big spenders?|top spenders?|"
           r"highest[- ]spending|biggest spenders|most valuable|high spenders?|heavy spenders",
           lambda m: condition("m_score", ">=", 5)),
        _r(r"低价值|消费低|消费很低|花钱少|低消费|low[- ]value|low spenders?|small spenders|spend(?:s)? (?:very )?little",
           lambda m: condition("m_score", "<=", 2)),
        _r(rf"(?:累计|总)?(?:消费|花费|花了|消费金额|总消费|购买金额)(?:金额)?(?:超过|大于|高于|多于|在|过){NUM}\s*(?:元|块|rmb|yuan)?(?:以上)?|"
           rf"(?:spent|spend|spending|total spend(?:ing)?|total spent)\s+(?:of\s+)?(?:more than|over|above|greater than|>)\s*(?:\$|¥|rmb\s*)?{NUM}",
           _amount("total_spend", ">")),
        _r(rf"(?:累计|总)?(?:消费|花费|消费金额)(?:少于|低于|不到|小于){NUM}\s*(?:元|块)?|"
           rf"(?:spent|spend|spending|total spend(?:ing)?)\s+(?:less than|under|below|<)\s*(?:\$|¥)?{NUM}",
           _amount("total_spend", "<")),
        _r(rf"客单价(?:超过|大于|高于|在){NUM}\s*(?:元|块)?(?:以上)?|(?:average order value|aov|average basket)\s+(?:of\s+)?"
           rf"(?:more than|over|above|greater than|>)\s*(?:\$|¥)?{NUM}",
           _amount("aov", ">")),
        # churn, clv, propensity
        _r(rf"(?:流失(?:风险|概率|可能性?)|churn (?:risk|probability))\s*(?:超过|大于|高于|above|over|more than|greater than|>)\s*{NUM}",
           lambda m: condition("churn_risk", ">", _value(m.group(1)) if "%" in m.group(1) or _value(m.group(1)) <= 1
                        else _value(m.group(1)) / 100)),
        _r(r"流失风险(?:很|比较|较)?高|(?:很|比较|较)?可能流失|快要?流失|容易流失|有流失风险|高流失|likely to (?:churn|leave|lapse)|"
           r"high churn(?: risk)?|at high risk of churn(?:ing)?|at risk of churn(?:ing)?|churn risk is high|high risk of churn(?:ing)?",
           lambda m: condition("churn_risk", ">", 0.6)),
        _r(r"流失风险(?:很|比较|较)?低|不太可能流失|不会流失|low churn(?: risk)?|unlikely to churn|low risk of churn(?:ing)?",
           lambda m: condition("churn_risk", "<", 0.3)),
        _r(rf"(?:预测|预估|未来)?(?:价值|生命周期价值|clv|ltv|客户价值)\s*(?:超过|大于|高于|在|above|over|more than|greater than|of more than|>)\s*"
           rf"(?:\$|¥)?{NUM}(?:\s*(?:元|块))?(?:以上)?|(?:predicted|expected|lifetime) value (?:above|over|more than|greater than)\s*(?:\$|¥)?{NUM}",
           _amount("clv", ">")),
        _r(r"购买意向高|购买意愿强|(?:很)?可能(?:会)?(?:下单|购买|买)|likely to (?:buy|purchase|order|convert)|high purchase (?:propensity|intent)|"
           r"likely (?:buyers|purchasers)|(?:high|strong) (?:buying|purchase) intent",
           lambda m: condition("purchase_propensity", ">", 0.6)),
        # aspects
        _r(rf"(?:抱怨|吐槽|投诉|不满意?|嫌弃?|差评)(?:过)?(?:了)?(?:过)?(?:对|关于)?({asp})(?:的问题|太贵|太慢|太差|不好|太烂|差|慢)?|对({asp})(?:很|比较)?(?:不满意?|有意见|差评)|"
           rf"({asp})(?:差评|不满意?|太差|很差|太慢|慢)",
           _aspect("<")),
        _r(rf"(?:complain(?:ed|s|ing)?|griped|unhappy|dissatisfied|upset|angry)\s+(?:about|with|over)\s+(?:the\s+|our\s+|their\s+)?({asp})|"
           rf"(?:bad|negative|poor) (?:reviews? (?:of|about) (?:the\s+)?)?({asp})(?: reviews?| feedback| experience)?|"
           rf"({asp}) complaints?|complaints? about (?:the\s+)?({asp})",
           _aspect("<")),
        _r(rf"(?:夸|夸奖|称赞|表扬|好评|满意)(?:过)?(?:了)?({asp})|对({asp})(?:很|比较|非常)?(?:满意|好评)|({asp})(?:好评|满意|很好|不错)",
           _aspect(">")),
        _r(rf"(?:praised|praise|liked|loved|happy with|satisfied with|pleased with|positive about)\s+(?:the\s+)?({asp})|"
           rf"(?:good|positive|great) ({asp}) (?:reviews?|feedback)",
           _aspect(">")),
        # reviews
        _r(r"差评(?:多|较多|很多|比较多)|(?:评价|评论)(?:大多|多半|基本)?(?:负面|差)|负面评价多|爱给差评|mostly negative reviews|"
           r"(?:mostly|mainly|largely) negative|negative reviewers|unhappy reviewers|leave (?:mostly )?bad reviews",
           lambda m: condition("negative_share", ">", 0.5)),
        _r(r"好评(?:多|较多|很多)|(?:评价|评论)(?:大多|多半|基本)?(?:正面|很好)|mostly positive reviews|(?:mostly|mainly) positive|happy reviewers",
           lambda m: condition("sentiment_mean", ">", 0.6)),
        _r(r"写过(?:评价|评论)|(?:有|留过|发过)(?:评价|评论)|(?:wrote|written|left|posted) (?:a |any )?reviews?|reviewers",
           lambda m: condition("n_texts", ">", 0)),
        # behaviour
        _r(r"爱用优惠(?:券)?|喜欢用优惠(?:券)?|只在打折(?:的)?时(?:候)?(?:才)?买|只买打折|薅羊毛|羊毛党|爱占便宜|优惠券(?:党|爱好者)|"
           r"deal[- ]seekers?|bargain hunters?|coupon (?:lovers|users|hunters|clippers)|(?:only |mostly )?buy(?:s)? (?:only )?on (?:discount|sale)|"
           r"discount (?:hunters|lovers|shoppers)",
           lambda m: condition("discounted_spend_share", ">", 0.5)),
        _r(r"退货(?:多|很多|频繁|率高|比较多)|经常退货|爱退货|(?:high|frequent) return(?:s| rate)?|return (?:a lot|often|frequently)|serial returners",
           lambda m: condition("return_rate", ">", 0.3)),
        _r(r"最近(?:30天|一个月|1个月)?(?:活跃|在逛|逛过|浏览过?|有浏览)|(?:active|browsing|browsed)(?: recently)?(?: in the (?:last|past) (?:30 days|1 month|month))?",
           lambda m: condition("events_last_30d", ">", 0)),
        # demographics
        _r(r"女性|女生|女士|女的|女客户|女用户|妈妈|女|\bwomen'?s?\b|\bwomens\b|\bfemales?\b|\bladies\b|\bwoman\b", lambda m: condition("gender", "=", "female")),
        _r(r"男性|男生|男士|男的|男客户|男用户|男|\bmen'?s?\b|\bmales?\b|\bguys\b|\bman\b", lambda m: condition("gender", "=", "male")),
        _r(r"(\d+)\s*(?:到|至|-|~|—|to|and)\s*(\d+)\s*(?:岁|周岁)|(?:aged?|between(?: the ages of)?|ages?)\s*(\d+)\s*(?:-|to|and|~)\s*(\d+)(?:\s*years? old)?|"
           r"(\d+)\s*-\s*(\d+)\s*year[- ]olds?",
           lambda m: condition("age", "between", [int(g) for g in m.groups() if g][:2])),
        _r(r"(\d+)\s*岁以上|(?:over|older than|above) (?:the age of )?(\d+)(?: years old)?|(\d+)\s*岁(?:以上)?的?(?:老|中老)年",
           lambda m: condition("age", ">", int(next(g for g in m.groups() if g)))),
        _r(r"(\d+)\s*岁以下|(?:under|younger than|below) (?:the age of )?(\d+)(?: years old)?",
           lambda m: condition("age", "<", int(next(g for g in m.groups() if g)))),
        # a bare aspect coordinated with a previous one ("抱怨物流或者客服"): takes that one's polarity
        _r(rf"({asp})", lambda m: {"field": f"aspect.{_lookup(ASPECTS, m.group(1))}", "op": "?", "value": None}),
        # places, channels, categories, segments
        _r(r"(" + "|".join(re.escape(c) for c in CITIES) + "|" + "|".join(re.escape(c) for c in CITY_NAMES) + r")",
           lambda m: condition("city", "=", CITY_NAMES.get(m.group(1), m.group(1).title() if m.group(1).isascii() else m.group(1)))),
        _r(rf"({_alt(COUNTRIES)})", lambda m: condition("country", "=", _lookup(COUNTRIES, m.group(1)))),
        _r(rf"({_alt(CHANNELS)})", lambda m: condition("channel", "=", _lookup(CHANNELS, m.group(1).strip()))),
        _r(rf"({seg})", lambda m: condition("rfm_segment", "=", _lookup(SEGMENTS, m.group(1)))),
        _r(rf"({cat})", lambda m: condition("top_category", "=", _lookup(CATEGORIES, m.group(1)))),
    ]
    return rules


RULES = _rules()

# what may be left over: filler words and connectives
FILLER_ZH = ("帮我", "给我", "找出", "找一下", "找找", "找到", "找", "筛选出", "筛选", "筛出", "列出", "拉一个", "拉一份", "拉出",
             "拉", "看看", "看一下", "查一下", "查询", "查", "圈出", "圈选", "圈一批", "圈", "选出", "哪些", "有哪些", "所有",
             "全部", "一下", "请", "麻烦", "客户群", "客户", "用户", "顾客", "买家", "人群", "会员", "消费者", "人", "的", "是",
             "在", "有", "过", "了", "都", "也", "还", "又", "来自", "住在", "位于", "地区", "城市", "类", "品类", "商品",
             "东西", "主要", "最常", "经常", "常", "喜欢", "爱", "买", "那些", "这些", "群体", "名单", "列表", "一批",
             "audience", "目前", "现在", "当前", "的人", "渠道", "通过", "用", "来的", "注册", "岁", "年龄", "之间", "分群",
             "群", "里", "中", "属于", "段", "我们", "我想", "想", "要", "需要", "对", "很", "比较", "呢", "吗", "吧", "啊",
             "从", "有多少", "多少", "都有谁", "有谁", "谁", "用品", "产品", "以外", "之外", "筛一下", "筛", "一些", "那种")
CONNECT_AND = ("并且", "而且", "同时", "以及", "还有", "但是", "但", "和", "与", "跟", "及", "且", "并", "、", ",", "，", "and",
               "who", "who've", "who have", "who has", "with", "that", "but", "whose", "also", "plus", "&")
CONNECT_OR = ("或者", "或是", "或", "还是", "or", "either")
CONNECT_NOT = ("不是", "不在", "不属于", "除了", "除去", "排除", "非", "不", "excluding", "except", "not", "but not", "other than",
               "without", "don't", "do not", "doesn't", "does not", "aren't", "isn't", "outside")
FILLER_EN = ("show me", "show", "find me", "find", "get me", "get", "give me", "give", "list", "pull", "select", "segment",
             "i want", "i need", "we need", "please", "all", "the", "our", "customers", "customer", "users", "user",
             "people", "shoppers", "buyers", "clients", "members", "folks", "ones", "those", "them", "who are", "who is",
             "are", "is", "were", "was", "be", "have", "has", "had", "of", "in", "from", "based in", "living in", "located in",
             "live in", "lives in", "on", "at", "by", "for", "to", "a", "an", "any", "some", "audience", "list of",
             "group", "category", "categories", "mostly", "mainly", "mostly buy", "buy", "buys", "bought", "shop", "shops",
             "products", "items", "goods", "stuff", "channel", "via", "through", "using", "use", "came", "come", "signed up",
             "registered", "years old", "year olds", "aged", "age", "segment", "rfm", "in the", "can you", "could you",
             "which", "what", "whom", "there", "me", "us", "we", "let's", "let us", "target", "targeting", "want", "like",
             "really", "very", "still", "currently", "now", "right now", "recently", "tier", "level", "type", "anyone",
             "everyone", "everybody", "anybody", "someone", "gear", "s", "how many", "count", "number of")
ACTIONS = re.compile(r"删除|删掉|清空|修改|更新|发送|发给|发短信|发邮件|导出给|转发|群发|写一|写首|写个|\b(?:delete|remove|drop|update|"
                      r"modify|send|email them|e-mail them|text them|export to|forward|write a|write me|truncate|insert)\b")
IDENTIFIER = re.compile(r"\[(?:PHONE|EMAIL|ID_CARD|BANK_CARD|ADDRESS)\]|customer[_ ]id|客户id|客户编号|\bc_[0-9a-f]{6,}", re.I)
FIELDS_UNKNOWN = re.compile(r"收入|工资|月薪|职业|工作|宠物|猫|狗|身高|体重|婚|学历|孩子几岁|信用|星座|血型|政治|宗教|"
                             r"\b(?:income|salary|job|occupation|pets?|cats?|dogs?|height|weight|married|marital|education|"
                             r"religion|credit score|zodiac|political|net worth)\b")



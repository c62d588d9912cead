"""Product catalogues for reverse image search: the same products from CSV, JSON Lines and Parquet, images from cells,
columns and folders, bad rows reported with the line a shop can fix, files that cannot be read at all, and a big
catalogue read as it streams."""

import json
import math
import pickle
import tracemalloc
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from vlsearch.indexer.catalogue import (
    FORMATS,
    CatalogueError,
    ProductRow,
    RowProblem,
    catalogue_format,
    read_catalogue,
)

PRODUCTS = [
    {"product_id": "12", "title": "Red shoe", "description": "Leather", "brand": "Acme", "category": "shoes",
     "price": 19.99, "currency": "EUR", "url": "https://shop.example/12", "image": "photos/12.jpg",
     "colour": "red"},
    {"product_id": "13", "title": "Blue hat", "description": None, "brand": None, "category": "hats",
     "price": 5.0, "currency": "usd", "url": None, "image": "https://cdn.example/13.jpg", "colour": "blue"},
]


def write_csv(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


def write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
    return path


def only(path: Path, format: str | None = None) -> ProductRow | RowProblem:
    rows = list(read_catalogue(path, format))
    assert len(rows) == 1, rows
    return rows[0]


def as_csv(products: list[dict]) -> str:
    header = list(products[0])
    lines = [",".join(header)]
    lines += [",".join("" if p[c] is None else str(p[c]) for c in header) for p in products]
    return "\n".join(lines) + "\n"


def without_line(row: ProductRow) -> dict:
    return {k: v for k, v in vars(row).items() if k != "line"}


def test_every_format_gives_the_same_products(tmp_path: Path):
    csv_rows = list(read_catalogue(write_csv(tmp_path / "c.csv", as_csv(PRODUCTS))))
    jsonl_rows = list(read_catalogue(write_jsonl(tmp_path / "c.jsonl", PRODUCTS)))
    pq.write_table(pa.Table.from_pylist(PRODUCTS), tmp_path / "c.parquet")
    parquet_rows = list(read_catalogue(tmp_path / "c.parquet"))

    assert [r.line for r in csv_rows] == [2, 3]
    assert [r.line for r in jsonl_rows] == [1, 2]
    assert [r.line for r in parquet_rows] == [1, 2]
    assert csv_rows[0] == ProductRow(
        line=2, product_id="12", title="Red shoe", description="Leather", brand="Acme", category="shoes",
        price=19.99, currency="EUR", url="https://shop.example/12", images=(str(tmp_path / "photos/12.jpg"),),
        attributes={"colour": "red"})
    assert csv_rows[1] == ProductRow(line=3, product_id="13", title="Blue hat", category="hats", price=5.0,
                                     currency="USD", images=("https://cdn.example/13.jpg",),
                                     attributes={"colour": "blue"})
    expected = [without_line(r) for r in csv_rows]
    assert [without_line(r) for r in jsonl_rows] == expected
    assert [without_line(r) for r in parquet_rows] == expected


def test_numeric_ids_become_text(tmp_path: Path):
    pq.write_table(pa.table({"product_id": [12, 13]}), tmp_path / "ids.parquet")
    assert [r.product_id for r in read_catalogue(tmp_path / "ids.parquet")] == ["12", "13"]
    assert only(write_jsonl(tmp_path / "ids.jsonl", [{"product_id": 7.0}])).product_id == "7"


@pytest.mark.parametrize(("name", "format", "kind"), [
    ("a.csv", None, "csv"), ("a.TSV", None, "csv"), ("a.jsonl", None, "jsonl"), ("a.ndjson", None, "jsonl"),
    ("a.json", None, "jsonl"), ("a.parquet", None, "parquet"), ("a.PQ", None, "parquet"),
    ("export.txt", "JSONL", "jsonl"), ("a.csv", "parquet", "parquet"),
])
def test_format_from_suffix_or_as_named(name: str, format: str | None, kind: str):
    assert catalogue_format(Path(name), format) == kind


def test_unknown_format_names_the_known_ones(tmp_path: Path):
    for path, format in ((tmp_path / "products.xlsx", None), (tmp_path / "products.csv", "excel")):
        with pytest.raises(CatalogueError) as caught:
            read_catalogue(path, format)
        assert str(path) in str(caught.value) and caught.value.path == path
        assert all(kind in str(caught.value) for kind in FORMATS)


def test_tab_separated_files(tmp_path: Path):
    assert only(write_csv(tmp_path / "a.tsv", "product_id\ttitle\n1\tMug, large\n")).title == "Mug, large"
    assert only(write_csv(tmp_path / "b.csv", "product_id\ttitle\n1\tMug\n")).title == "Mug"
    assert only(write_csv(tmp_path / "c.txt", "product_id\ttitle\n1\tMug\n"), "csv").title == "Mug"


def test_bom_and_odd_header_case(tmp_path: Path):
    path = write_csv(tmp_path / "excel.csv", "Product_ID , TITLE,Price,Colour \n 7 , Lamp ,3,  green \n",
                     encoding="utf-8-sig")
    assert only(path) == ProductRow(line=2, product_id="7", title="Lamp", price=3.0, attributes={"colour": "green"})
    tsv = write_csv(tmp_path / "excel.tsv", "PRODUCT_ID\tBrand\n7\tAcme\n", encoding="utf-8-sig")
    assert only(tsv) == ProductRow(line=2, product_id="7", brand="Acme")


def test_several_images_per_cell_and_column(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir("/")  # relative paths follow the catalogue, not the working folder
    (tmp_path / "shop").mkdir()
    path = write_csv(tmp_path / "shop" / "c.csv",
                     "product_id,image,Image_2,image3,images,image_url\n"
                     "1, a.jpg | sub/b.jpg|| ,HTTPS://cdn.example/c.jpg,a.jpg,../d.jpg|/abs/e.jpg,"
                     "http://cdn.example/f.jpg\n")
    assert only(path).images == (
        str(tmp_path / "shop" / "a.jpg"), str(tmp_path / "shop" / "sub" / "b.jpg"), "HTTPS://cdn.example/c.jpg",
        str(tmp_path / "d.jpg"), "/abs/e.jpg", "http://cdn.example/f.jpg")


def test_images_as_lists_home_folders_and_drive_letters(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    path = write_jsonl(tmp_path / "c.jsonl", [
        {"product_id": "1", "images": ["https://x.example/1.jpg", "~/p/1.jpg", None, "https://x.example/1.jpg"],
         "image_back": "C:\\photos\\1.jpg"},
    ])
    assert only(path).images == ("https://x.example/1.jpg", str(tmp_path / "home" / "p" / "1.jpg"),
                                 str(tmp_path / "C:\\photos\\1.jpg"))
    pq.write_table(pa.table({"product_id": ["1"], "images": [["a.jpg", "b.jpg"]]}), tmp_path / "c.parquet")
    assert only(tmp_path / "c.parquet").images == (str(tmp_path / "a.jpg"), str(tmp_path / "b.jpg"))


@pytest.mark.parametrize("image", ["ftp://host/a.jpg", "file:///a.jpg", "data:image/png;base64,AAAA"])
def test_images_that_are_neither_web_urls_nor_paths_are_problems(tmp_path: Path, image: str):
    path = write_jsonl(tmp_path / "c.jsonl", [{"product_id": "1", "image": ["ok.jpg", image]}])
    assert only(path) == RowProblem(1, f"image {image!r} is neither an http(s) URL nor a file path")


def test_csv_problems_name_the_line_a_record_starts_on(tmp_path: Path):
    path = write_csv(tmp_path / "c.csv", (
        "product_id,title,description\n"
        '1,Chair,"Oak,\nthree lines\nlong"\n'
        ",Table,no id\n"
        "\n"
        "3,Stool,short,extra\n"
        "4,Bench\n"
        "5,Shelf,x,,\n"
    ))
    assert list(read_catalogue(path)) == [
        ProductRow(line=2, product_id="1", title="Chair", description="Oak,\nthree lines\nlong"),
        RowProblem(5, "no product_id"),
        RowProblem(7, "4 cells but the header has 3 columns"),
        ProductRow(line=8, product_id="4", title="Bench"),
        RowProblem(9, "5 cells but the header has 3 columns"),
    ]


def test_jsonl_problems_name_their_line_and_blank_lines_are_skipped(tmp_path: Path):
    path = tmp_path / "c.jsonl"
    path.write_text('{"product_id": "1"}\n\n   \n[1, 2]\n{"product_id": "2",\n{"title": "x"}\n"p"\n{"product_id": 3}\n')
    rows = list(read_catalogue(path))
    assert [(r.line, type(r).__name__) for r in rows] == [
        (1, "ProductRow"), (4, "RowProblem"), (5, "RowProblem"), (6, "RowProblem"), (7, "RowProblem"),
        (8, "ProductRow")]
    assert rows[1].message == "not a JSON object: an array"
    assert rows[2].message.startswith("not a JSON object: Expecting")
    assert rows[3].message == "no product_id"
    assert rows[4].message == "not a JSON object: a string"


def test_a_json_array_is_not_a_catalogue(tmp_path: Path):
    path = tmp_path / "c.json"
    path.write_text('[{"product_id": "1"}]')
    with pytest.raises(CatalogueError, match="JSON Lines"):
        list(read_catalogue(path))


def test_overlong_product_id_and_several_problems_at_once(tmp_path: Path):
    path = write_jsonl(tmp_path / "c.jsonl", [{"product_id": "x" * 257}, {"product_id": "1", "price": "abc",
                                                                           "currency": "euro"}])
    assert list(read_catalogue(path)) == [
        RowProblem(1, "product_id is 257 characters long; at most 256 are allowed"),
        RowProblem(2, "price 'abc' is not a number; currency 'euro' is not a 3-letter code"),
    ]


@pytest.mark.parametrize(("price", "expected"), [
    ("19.99", 19.99), (" 1,299.50 ", 1299.5), ("1,000,000", 1e6), ("0", 0.0), (".5", 0.5), (12, 12.0),
    (7.25, 7.25), ("", None), (None, None), (float("nan"), None),
])
def test_prices_that_are_read(tmp_path: Path, price, expected):
    row = only(write_jsonl(tmp_path / "c.jsonl", [{"product_id": "1", "price": price}]))
    assert row.price == expected


@pytest.mark.parametrize(("price", "message"), [
    ("abc", "price 'abc' is not a number"),
    ("19,99", "price '19,99' is not a number (use a dot for decimals)"),
    ("1299,500", "price '1299,500' is not a number (use a dot for decimals)"),
    ("€19.99", "price '€19.99' is not a number"),
    ("19.99 EUR", "price '19.99 EUR' is not a number"),
    ("-5", "price '-5' is negative"),
    (-0.5, "price -0.5 is negative"),
    ("nan", "price 'nan' is not a number"),
    (float("inf"), "price inf is not a finite number"),
    (True, "price True is not a number"),
])
def test_prices_that_are_problems(tmp_path: Path, price, message: str):
    assert only(write_jsonl(tmp_path / "c.jsonl", [{"product_id": "1", "price": price}])) == RowProblem(1, message)


def test_decimal_prices_from_parquet(tmp_path: Path):
    prices = pa.array([Decimal("1299.50"), Decimal("-2.00")], pa.decimal128(8, 2))
    pq.write_table(pa.table({"product_id": ["1", "2"], "price": prices}), tmp_path / "c.parquet")
    assert list(read_catalogue(tmp_path / "c.parquet")) == [ProductRow(line=1, product_id="1", price=1299.5),
                                                            RowProblem(2, "price -2.00 is negative")]


def test_csv_prices_and_currencies(tmp_path: Path):
    path = write_csv(tmp_path / "c.csv", 'product_id,price,currency\n1,"1,299.50",eur\n2,"19,99",EUR\n3,1,€\n')
    assert list(read_catalogue(path)) == [
        ProductRow(line=2, product_id="1", price=1299.5, currency="EUR"),
        RowProblem(3, "price '19,99' is not a number (use a dot for decimals)"),
        RowProblem(4, "currency '€' is not a 3-letter code"),
    ]


@pytest.mark.parametrize(("currency", "expected"), [("eur", "EUR"), (" usd ", "USD"), ("GbP", "GBP"), ("", None)])
def test_currencies_that_are_read(tmp_path: Path, currency: str, expected: str | None):
    assert only(write_jsonl(tmp_path / "c.jsonl", [{"product_id": "1", "currency": currency}])).currency == expected


@pytest.mark.parametrize("currency", ["euro", "€", "E1R", 978, "ÉUR"])
def test_currencies_that_are_problems(tmp_path: Path, currency):
    row = only(write_jsonl(tmp_path / "c.jsonl", [{"product_id": "1", "currency": currency}]))
    assert row == RowProblem(1, f"currency {currency!r} is not a 3-letter code")


def test_attributes_keep_their_types_in_jsonl_and_parquet(tmp_path: Path):
    record = {"product_id": "1", "Size ": " M ", "stock": 3, "weight": 1.5, "in_stock": True, "tags": ["b", "a"],
              "dims": {"w": 2, "h": 1}, "note": "  ", "gone": None}
    expected = {"size": "M", "stock": 3, "weight": 1.5, "in_stock": True, "tags": '["b", "a"]',
                "dims": '{"h": 1, "w": 2}'}
    assert only(write_jsonl(tmp_path / "c.jsonl", [record])).attributes == expected
    pq.write_table(pa.Table.from_pylist([record]), tmp_path / "c.parquet")
    assert only(tmp_path / "c.parquet").attributes == expected
    odd = only(write_jsonl(tmp_path / "odd.jsonl", [{"product_id": "1", "ratio": math.inf, "empty": []}]))
    assert odd.attributes == {}


def test_attributes_are_text_in_csv(tmp_path: Path):
    path = write_csv(tmp_path / "c.csv", ",product_id,stock,in_stock,Material\n0,1, 3 ,true,\n")  # pandas' index
    assert only(path).attributes == {"stock": "3", "in_stock": "true"}


def test_no_product_id_column_names_the_columns_found(tmp_path: Path):
    path = write_csv(tmp_path / "c.csv", "sku,name\n1,Mug\n")
    with pytest.raises(CatalogueError) as caught:
        list(read_catalogue(path))
    assert "product_id" in str(caught.value) and "'sku', 'name'" in str(caught.value)
    assert str(path) in str(caught.value)
    pq.write_table(pa.table({"sku": ["1"]}), tmp_path / "c.parquet")
    with pytest.raises(CatalogueError, match="'sku'"):
        list(read_catalogue(tmp_path / "c.parquet"))


def test_files_that_cannot_be_read(tmp_path: Path):
    latin1 = write_csv(tmp_path / "latin1.csv", "product_id,title\n1,Crème brûlée\n", encoding="latin-1")
    corrupt = tmp_path / "corrupt.parquet"
    corrupt.write_bytes(b"PAR1 this is not parquet at all")
    empty = write_csv(tmp_path / "empty.csv", "")
    for path, says in ((latin1, "not UTF-8"), (corrupt, "Parquet"), (tmp_path / "missing.jsonl", "cannot be read"),
                       (empty, "no columns")):
        with pytest.raises(CatalogueError) as caught:
            list(read_catalogue(path))
        assert says in str(caught.value) and str(path) in str(caught.value)
        copy = pickle.loads(pickle.dumps(caught.value))
        assert (copy.path, str(copy)) == (path, str(caught.value))


def test_a_big_catalogue_streams(tmp_path: Path):
    path = tmp_path / "big.csv"
    with path.open("w") as f:
        f.write("product_id,title,description,image\n")
        f.writelines(f"{i},Product {i},{'words ' * 10},photos/{i}.jpg\n" for i in range(200_000))
    with path.open("ab") as f:
        f.write(b"\xff\xfe broken tail\n")  # a file read whole would fail here before giving any row
    size = path.stat().st_size

    tracemalloc.start()
    rows = read_catalogue(path)
    first = next(rows)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    rows.close()

    assert first == ProductRow(line=2, product_id="0", title="Product 0", description=("words " * 10).strip(),
                               images=(str(tmp_path / "photos" / "0.jpg"),))
    assert size > 15_000_000 and peak < size / 50

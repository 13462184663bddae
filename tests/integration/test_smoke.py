import uuid


def test_open_and_read_account(accounts_api):
    account_id = str(uuid.uuid4())
    created = accounts_api.call(
        "POST", "/v1/accounts", {"id": account_id, "currency": "EUR", "owner": "alice"}
    )
    assert created.status_code == 201, created.json
    got = accounts_api.call("GET", f"/v1/accounts/{account_id}")
    assert got.status_code == 200
    assert got.json["balance"] == {"posted": 0, "available": 0}

"""The Magento recipe of docs/recipes.md (a module, whole files under docs/recipes/magento): its
PHP through ``php -l``, its XML parsed, the Content Security Policy naming the broker, and the
token controller run by PHP against a real broker."""

from __future__ import annotations

import json
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from tests.stack import READ_PATH
from tests.support import ISSUER_KEY

ROOT = Path(__file__).resolve().parents[2]
MAGENTO = ROOT / "docs" / "recipes" / "magento" / "app" / "code" / "Merchant" / "Referrals"
DOC_BROKER = "https://referrals.shop.example"  # the broker's URL in the recipes


def test_magento_php_passes_php_lint() -> None:
    """Every PHP file and template of the Magento module passes ``php -l``."""
    php = shutil.which("php")
    assert php, "php is not installed: run bash scripts/setup --test"
    sources = sorted([*MAGENTO.rglob("*.php"), *MAGENTO.rglob("*.phtml")])
    assert len(sources) >= 4
    for source in sources:
        done = subprocess.run(
            [php, "-l", str(source)], capture_output=True, text=True, timeout=60, check=False
        )
        assert done.returncode == 0, done.stdout + done.stderr


def test_magento_xml_is_well_formed() -> None:
    """Every XML file of the module parses, and names the schema Magento validates it with."""
    files = sorted(MAGENTO.rglob("*.xml"))
    assert len(files) >= 5
    schema = "{http://www.w3.org/2001/XMLSchema-instance}noNamespaceSchemaLocation"
    for file in files:
        root = ET.parse(file).getroot()  # noqa: S314 (the repository's own files)
        assert root.get(schema, "").startswith("urn:magento:"), file


def test_magento_csp_allows_the_broker_for_scripts_and_calls() -> None:
    """csp_whitelist.xml lists the broker's origin (config.xml's default) under script-src and
    connect-src, the two directives the widget needs."""
    policies = ET.parse(MAGENTO / "etc" / "csp_whitelist.xml").getroot()  # noqa: S314
    hosts = {
        policy.get("id"): [value.text for value in policy.iter("value")]
        for policy in policies.iter("policy")
    }
    assert hosts == {"script-src": [DOC_BROKER], "connect-src": [DOC_BROKER]}
    config = ET.parse(MAGENTO / "etc" / "config.xml").getroot()  # noqa: S314
    assert config.findtext("default/referrals/broker/url") == DOC_BROKER


def test_magento_token_route_matches_the_template() -> None:
    """The route the template's token-url names (referrals/token) is the controller's; the
    template writes the manifest's integrity on the script tag."""
    routes = ET.parse(MAGENTO / "etc" / "frontend" / "routes.xml").getroot()  # noqa: S314
    route = routes.find("router/route")
    module = routes.find("router/route/module")
    assert route is not None and module is not None
    assert (route.get("frontName"), module.get("name")) == ("referrals", "Merchant_Referrals")
    assert (MAGENTO / "Controller" / "Token" / "Index.php").is_file()
    assert "getUrl('referrals/token')" in (MAGENTO / "ViewModel" / "Widget.php").read_text()
    template = (MAGENTO / "view" / "frontend" / "templates" / "widget.phtml").read_text()
    assert "'integrity' => $script['integrity']" in template
    assert "$widget->tokenUrl()" in template


# The few Magento classes the controller uses, as small stand-ins; the HTTP client is a real
# one (PHP's stream wrapper), so the controller really calls the broker's POST /tokens.
MAGENTO_STANDINS = r"""<?php
namespace Magento\Framework\App\Action { interface HttpGetActionInterface {} }
namespace Magento\Store\Model { interface ScopeInterface { const SCOPE_STORE = 'store'; } }
namespace Magento\Framework\App\Config {
    class ScopeConfigInterface {
        public function __construct(private array $values) {}
        public function getValue(string $path, string $scope) { return $this->values[$path]; }
    }
}
namespace Magento\Framework\App {
    class DeploymentConfig {
        public function __construct(private array $values) {}
        public function get(string $path) { return $this->values[$path]; }
    }
}
namespace Magento\Customer\Model {
    class Customer {
        public function __construct(private string $email) {}
        public function getEmail() { return $this->email; }
    }
    class Session {
        public function __construct(private ?string $id, private string $email) {}
        public function isLoggedIn(): bool { return $this->id !== null; }
        public function getCustomerId() { return $this->id; }
        public function getCustomer(): Customer { return new Customer($this->email); }
    }
}
namespace Magento\Framework\Controller\Result {
    class Json {
        public array $headers = []; public int $status = 200; public $data = null;
        public function setHeader($name, $value, $replace = false) {
            $this->headers[$name] = $value;
            return $this;
        }
        public function setHttpResponseCode($code) { $this->status = $code; return $this; }
        public function setData($data) { $this->data = $data; return $this; }
    }
    class JsonFactory { public function create(): Json { return new Json(); } }
}
namespace Magento\Framework\HTTP\Client {
    class Curl {
        public array $sent = []; private array $headers = []; private int $timeout = 30;
        private int $status = 0; private string $body = '';
        public function setTimeout($seconds) { $this->timeout = $seconds; }
        public function addHeader($name, $value) { $this->headers[] = "$name: $value"; }
        public function post($uri, $body) {
            $this->sent[] = $uri;
            $context = stream_context_create(['http' => [
                'method' => 'POST', 'header' => implode("\r\n", $this->headers), 'content' => $body,
                'timeout' => $this->timeout, 'ignore_errors' => true]]);
            $answer = file_get_contents($uri, false, $context);
            if ($answer === false) { throw new \Exception("unreachable: $uri"); }
            $this->body = $answer;
            preg_match('#^HTTP/\S+ (\d+)#', $http_response_header[0], $status);
            $this->status = (int) $status[1];
        }
        public function getStatus() { return $this->status; }
        public function getBody() { return $this->body; }
    }
    class CurlFactory {
        public array $made = [];
        public function create(): Curl { return $this->made[] = new Curl(); }
    }
}
namespace {
    require $argv[1];
    [$_, $controller, $broker, $issuerKey, $customer] = $argv;
    $curls = new Magento\Framework\HTTP\Client\CurlFactory();
    $action = new Merchant\Referrals\Controller\Token\Index(
        new Magento\Customer\Model\Session($customer === '' ? null : $customer, 'mage@example.com'),
        new Magento\Framework\Controller\Result\JsonFactory(),
        $curls,
        new Magento\Framework\App\Config\ScopeConfigInterface(
            ['referrals/broker/url' => "$broker/"]
        ),
        new Magento\Framework\App\DeploymentConfig(['referrals/issuer_key' => $issuerKey])
    );
    $result = $action->execute();
    $calls = array_merge([], ...array_map(fn ($curl) => $curl->sent, $curls->made));
    echo json_encode(['status' => $result->status, 'headers' => $result->headers,
                      'data' => $result->data, 'calls' => $calls]);
}
"""


def run_controller(tmp_path: Path, broker: str, issuer_key: str, customer: str) -> Any:
    php = shutil.which("php")
    assert php, "php is not installed: run bash scripts/setup --test"
    driver = tmp_path / "driver.php"
    driver.write_text(MAGENTO_STANDINS)
    controller = MAGENTO / "Controller" / "Token" / "Index.php"
    done = subprocess.run(
        [php, str(driver), str(controller), broker, issuer_key, customer],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout)


def test_magento_controller_mints_for_the_session_customer(
    wire_broker: Any, tmp_path: Path
) -> None:
    """The Magento controller, run by PHP against a real broker: for a signed-in customer it
    answers the broker's token (which the broker then accepts for that customer) with
    Cache-Control private, no-store; a visitor gets 401 and the broker is not called; a wrong
    issuer key is a 502 that shows the browser nothing of the broker's answer."""
    answer = run_controller(tmp_path, wire_broker.url, ISSUER_KEY, "mage-42")
    assert answer["status"] == 200, answer
    assert answer["headers"]["Cache-Control"] == "private, no-store"
    assert answer["calls"] == [f"{wire_broker.url}/tokens"]
    assert set(answer["data"]) == {"token", "expires_at"}
    read = wire_broker.client.post(
        READ_PATH,
        json={"customer": {"shopid": "mage-42", "email": "MAGE@example.com"}},
        headers={"Authorization": f"Bearer {answer['data']['token']}"},
    )
    assert read.status_code == 200, read.text
    visitor = run_controller(tmp_path, wire_broker.url, ISSUER_KEY, "")
    assert (visitor["status"], visitor["data"]["id"], visitor["calls"]) == (
        401,
        "customer_not_logged_in",
        [],
    )
    assert visitor["headers"]["Cache-Control"] == "private, no-store"
    refused = run_controller(tmp_path, wire_broker.url, "x" * 40, "mage-42")
    assert (refused["status"], refused["data"]) == (502, {"id": "token_not_minted", "status": 502})

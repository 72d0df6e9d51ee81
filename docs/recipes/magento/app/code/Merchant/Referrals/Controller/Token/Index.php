<?php
declare(strict_types=1);

namespace Merchant\Referrals\Controller\Token;

use Magento\Customer\Model\Session;
use Magento\Framework\App\Action\HttpGetActionInterface;
use Magento\Framework\App\Config\ScopeConfigInterface;
use Magento\Framework\App\DeploymentConfig;
use Magento\Framework\Controller\Result\Json;
use Magento\Framework\Controller\Result\JsonFactory;
use Magento\Framework\HTTP\Client\CurlFactory;
use Magento\Store\Model\ScopeInterface;

/**
 * GET /referrals/token: the widget's token-url. For the signed-in customer of this session, the
 * broker's POST /tokens answer ({"token", "expires_at"}); 401 for a visitor.
 *
 * The issuer key stays on this server, in app/etc/env.php:
 *     'referrals' => ['issuer_key' => '<one of the broker's BROKER_ISSUER_KEYS>'],
 *
 * Never cached: the answer is one customer's. Cache-Control "private, no-store" keeps it out of
 * Magento's full-page cache (built-in: only public answers are stored) and out of Varnish
 * (Magento's VCL passes private answers); the customer session is read here, at request time.
 */
class Index implements HttpGetActionInterface
{
    public function __construct(
        private readonly Session $session,
        private readonly JsonFactory $jsonFactory,
        private readonly CurlFactory $curlFactory,
        private readonly ScopeConfigInterface $config,
        private readonly DeploymentConfig $deploymentConfig
    ) {
    }

    public function execute(): Json
    {
        $result = $this->jsonFactory->create();
        $result->setHeader('Cache-Control', 'private, no-store', true);
        $result->setHeader('Pragma', 'no-cache', true);
        if (!$this->session->isLoggedIn()) {
            return $this->refuse($result, 401, 'customer_not_logged_in');
        }
        $body = ['customer_id' => (string) $this->session->getCustomerId()];
        $email = (string) $this->session->getCustomer()->getEmail();
        if ($email !== '') {
            $body['email'] = $email;
        }
        $broker = rtrim((string) $this->config->getValue('referrals/broker/url', ScopeInterface::SCOPE_STORE), '/');
        $curl = $this->curlFactory->create();
        $curl->setTimeout(5);
        $curl->addHeader('Authorization', 'Bearer ' . (string) $this->deploymentConfig->get('referrals/issuer_key'));
        $curl->addHeader('Content-Type', 'application/json');
        try {
            $curl->post($broker . '/tokens', json_encode($body, JSON_THROW_ON_ERROR));
        } catch (\Exception $unreachable) {
            return $this->refuse($result, 502, 'broker_unreachable');
        }
        $answer = json_decode((string) $curl->getBody(), true);
        if ($curl->getStatus() !== 200 || !is_array($answer) || !is_string($answer['token'] ?? null)) {
            // The broker's problem document names the cause (say, invalid_issuer_key): it is for
            // the server's log, not for the shopper's browser.
            return $this->refuse($result, 502, 'token_not_minted');
        }
        return $result->setData(['token' => $answer['token'], 'expires_at' => $answer['expires_at'] ?? null]);
    }

    private function refuse(Json $result, int $status, string $id): Json
    {
        $result->setHttpResponseCode($status);
        return $result->setData(['id' => $id, 'status' => $status]);
    }
}

<?php
declare(strict_types=1);

namespace Merchant\Referrals\ViewModel;

use Magento\Framework\App\CacheInterface;
use Magento\Framework\App\Config\ScopeConfigInterface;
use Magento\Framework\HTTP\Client\CurlFactory;
use Magento\Framework\Locale\ResolverInterface;
use Magento\Framework\UrlInterface;
use Magento\Framework\View\Element\Block\ArgumentInterface;
use Magento\Store\Model\ScopeInterface;

/**
 * What the widget's template needs: the broker, the shop, the token URL, and the script tag's
 * src and integrity, read from the broker's /static/manifest.json (kept 60 seconds, as the
 * broker's Cache-Control says): the version the broker runs now, never one pinned here.
 */
class Widget implements ArgumentInterface
{
    private const MANIFEST_CACHE_KEY = 'merchant_referrals_manifest';
    private const MANIFEST_LIFETIME = 60;

    public function __construct(
        private readonly ScopeConfigInterface $config,
        private readonly CacheInterface $cache,
        private readonly CurlFactory $curlFactory,
        private readonly UrlInterface $url,
        private readonly ResolverInterface $locale
    ) {
    }

    public function brokerUrl(): string
    {
        return rtrim((string) $this->config->getValue('referrals/broker/url', ScopeInterface::SCOPE_STORE), '/');
    }

    public function shop(): string
    {
        return (string) $this->config->getValue('referrals/broker/shop', ScopeInterface::SCOPE_STORE);
    }

    public function tokenUrl(): string
    {
        return $this->url->getUrl('referrals/token');
    }

    /** The store's language (de_DE: de), for the widget's lang. */
    public function language(): string
    {
        return strtok($this->locale->getLocale(), '_') ?: 'en';
    }

    /**
     * @return array{src: string, integrity: string}|null null when the manifest cannot be read
     */
    public function widgetScript(): ?array
    {
        $manifest = $this->cache->load(self::MANIFEST_CACHE_KEY);
        if ($manifest === false) {
            $curl = $this->curlFactory->create();
            $curl->setTimeout(3);
            try {
                $curl->get($this->brokerUrl() . '/static/manifest.json');
            } catch (\Exception $unreachable) {
                return null;
            }
            if ($curl->getStatus() !== 200) {
                return null;
            }
            $manifest = (string) $curl->getBody();
            $this->cache->save($manifest, self::MANIFEST_CACHE_KEY, [], self::MANIFEST_LIFETIME);
        }
        $entry = json_decode($manifest, true)['files']['referral-widget.js'] ?? null;
        if (!is_array($entry) || !is_string($entry['path'] ?? null) || !is_string($entry['integrity'] ?? null)) {
            return null;
        }
        return ['src' => $this->brokerUrl() . $entry['path'], 'integrity' => $entry['integrity']];
    }
}
